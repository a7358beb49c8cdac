// Every text the app shows, in one catalogue ready for translation. `t(key, values)` fills `{name}` slots.

export const strings = {
  appName: "Steward",
  loading: "Loading…",
  signInTitle: "Sign in",
  signInIntro: "Paste an API token, or the dev token that make run printed. The browser keeps a session cookie, never the token.",
  tokenLabel: "API token",
  signInButton: "Sign in",
  signingIn: "Signing in…",
  tokenMissing: "Paste a token first.",
  tokenRejected: "That token was not accepted: it is unknown, revoked or expired.",
  signInUnavailable: "This server does not offer sign-in from the browser.",
  signInFailed: "Sign-in failed: {detail}",
  unreachable: "The server cannot be reached. Check your connection and try again.",
  signedInAs: "Signed in as {user}",
  signedInLabel: "Signed in as",
  signOut: "Sign out",
  signOutFailed: "Sign-out failed: {detail}",
  conversationsTitle: "Conversations",
  conversationsEmpty: "Your conversations will be listed here.",
  mainEmpty: "Pick a conversation, or start a new one.",
  skipToContent: "Skip to content",
};

export function t(key, values = {}) {
  const text = strings[key];
  if (text === undefined) throw new Error(`no string ${key}`);
  return text.replace(/\{(\w+)\}/g, (slot, name) => (name in values ? String(values[name]) : slot));
}
