"""The chaos suite: the real stack as processes, a fault proxy between them, and scenarios that kill, stop, partition
and overload it and report figures with PASS/FAIL (`make chaos`; a bounded subset runs in `make test`)."""
