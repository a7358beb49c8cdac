"""The web app's third-party modules: pinned in gateway/web/vendor/pins.json, vendored by `make vendor`, checked by
`make check-vendor` (and tests/gateway/test_web.py) without npm.

`python -m tests.support.web_vendor vendor` installs the pinned packages and the pinned esbuild from npm into a
scratch folder (never the repository's root), bundles each module into ONE minified plain ES module,
`gateway/web/vendor/<name>.js`, and writes `gateway/web/vendor/manifest.json`: per module its npm name, exact
version, the sha256 of the vendored file, and the exact version of every package bundled into it (a module's own
dependencies, resolved by npm from its ranges). `python -m tests.support.web_vendor check` (the default) verifies
that the manifest names exactly the pinned modules at their pinned versions and that every vendored file's sha256
matches it; it exits 1 naming each mismatch. `make run` needs no npm: the vendored files are committed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENDOR = REPO / "gateway" / "web" / "vendor"
PINS = VENDOR / "pins.json"
MANIFEST = VENDOR / "manifest.json"
_EXACT = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
_BUNDLED = re.compile(r"node_modules/((?:@[^/]+/)?[^/]+)/")


def load(path: Path) -> dict[str, Any]:
    loaded = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return loaded


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def problems(vendor: Path = VENDOR) -> list[str]:
    """What in `vendor` does not match its pins and manifest; empty when everything does."""
    pins, found = load(vendor / "pins.json"), []
    manifest = load(vendor / "manifest.json") if (vendor / "manifest.json").exists() else {"modules": {}}
    modules: dict[str, Any] = manifest.get("modules", {})
    if manifest.get("esbuild") != pins["esbuild"]:
        found.append(f"the manifest's esbuild {manifest.get('esbuild')!r} is not the pinned {pins['esbuild']!r}")
    for name in sorted(pins["modules"].keys() - modules.keys()):
        found.append(f"{name} is pinned but not vendored: run 'make vendor'")
    for name in sorted(modules.keys() - pins["modules"].keys()):
        found.append(f"{name} is vendored but not pinned")
    for name in sorted(pins["modules"].keys() & modules.keys()):
        pin, entry = pins["modules"][name], modules[name]
        if not _EXACT.fullmatch(pin["version"]):
            found.append(f"{name}: the pin {pin['version']!r} is not an exact version")
        if (entry.get("package"), entry.get("version")) != (pin["package"], pin["version"]):
            vendored = f"{entry.get('package')}@{entry.get('version')}"
            found.append(f"{name}: vendored {vendored}, pinned {pin['package']}@{pin['version']}")
        file = vendor / f"{name}.js"
        if not file.exists():
            found.append(f"{name}: {file.name} is missing")
        elif sha256(file) != entry.get("sha256"):
            found.append(f"{name}: {file.name} does not match the manifest's sha256 (edited? run 'make vendor')")
    return found


def _entry(package: str, default_export: bool) -> str:
    """The bundle's entry: the package's named exports, and its default export when it has one."""
    text = f'export * from "{package}";\n'
    return text + (f'export {{ default }} from "{package}";\n' if default_export else "")


def _bundled(metafile: dict[str, Any], scratch: Path) -> dict[str, str]:
    """The exact version of every package the bundle took code from."""
    versions = {}
    for path in metafile["inputs"]:
        matched = _BUNDLED.search(path)
        if matched:
            package = matched.group(1)
            versions[package] = load(scratch / "node_modules" / package / "package.json")["version"]
    return dict(sorted(versions.items()))


def vendor(target: Path = VENDOR) -> None:
    """Install the pins from npm into a scratch folder, bundle each module into `target`, write the manifest."""
    pins = load(target / "pins.json")
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("make vendor needs npm (Node 20 or later); make run and make check-vendor do not")
    with tempfile.TemporaryDirectory(prefix="steward-vendor-") as tmp:
        scratch = Path(tmp)
        specs = [f"{pin['package']}@{pin['version']}" for pin in pins["modules"].values()]
        install = [npm, "install", "--silent", "--no-save", "--no-package-lock", "--no-audit", "--no-fund"]
        subprocess.run([*install, "--prefix", tmp, f"esbuild@{pins['esbuild']}", *specs], check=True)
        esbuild = scratch / "node_modules" / ".bin" / "esbuild"
        modules = {}
        for name, pin in sorted(pins["modules"].items()):
            (scratch / f"{name}.entry.js").write_text(_entry(pin["package"], bool(pin.get("default_export"))))
            out, meta = target / f"{name}.js", scratch / f"{name}.meta.json"
            args = ["--bundle", "--format=esm", "--minify", "--target=es2022", "--legal-comments=eof"]
            args += ["--log-level=warning"]
            args += [f"--outfile={out}", f"--metafile={meta}"]
            subprocess.run([str(esbuild), f"{name}.entry.js", *args], cwd=tmp, check=True)
            modules[name] = {
                "package": pin["package"],
                "version": pin["version"],
                "sha256": sha256(out),
                "bundled": _bundled(load(meta), scratch),
            }
    manifest = {"esbuild": pins["esbuild"], "modules": modules}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "vendor":
        vendor()
        print(f"vendored {', '.join(sorted(load(PINS)['modules']))} into {VENDOR.relative_to(REPO)}")
        return 0
    if command != "check":
        print("usage: python -m tests.support.web_vendor [check|vendor]", file=sys.stderr)
        return 2
    found = problems()
    for problem in found:
        print(f"check-vendor: {problem}", file=sys.stderr)
    if not found:
        print("check-vendor: the vendored web modules match their pins and manifest")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
