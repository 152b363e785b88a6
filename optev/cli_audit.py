"""``optev audit verify PATH [--head HASH] [--json]``: check the hash-chained audit log (R6.4.2).

Reads the JSON-lines audit log written by :class:`optev.audit.log.AuditLog` and checks every
entry's hash, the sequence numbers and the chain (:func:`optev.audit.log.verify`), then the end
of the log against its head file ``PATH.head`` and, with ``--head``, against a head hash recorded
elsewhere earlier.

Exit codes: 0 — intact (prints the number of entries and the head: seq and hash, worth keeping
somewhere else as an anchor); 1 — tampered (prints the first bad entry: its line and seq, and
what is wrong: edited, removed, reordered, garbled or cut off); 2 — a user mistake (missing file,
not an audit log), one line on stderr.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from optev.audit.log import verify

EXIT_TAMPERED = 1
"""Exit code of ``optev audit verify`` on a tampered log."""


def add_audit_parser(sub: Any) -> None:
    """Register ``optev audit verify`` on the sub-command parsers of :mod:`optev.cli`."""
    au = sub.add_parser("audit", help="the tamper-evident audit log: verify its hash chain")
    asub = au.add_subparsers(dest="audit_command", required=True, parser_class=type(au))
    ver = asub.add_parser("verify", help="check an audit log: exit 0 intact, 1 tampered (the first bad entry named)")
    ver.add_argument("path", help="the audit log (JSON lines written by optev)")
    ver.add_argument("--head", help="a head hash printed by an earlier verify: the log must still contain it")
    ver.add_argument("--json", action="store_true", help="print one JSON object")
    au.set_defaults(func=_cmd_audit)


def _cmd_audit(args: argparse.Namespace) -> int:
    result = verify(args.path, head=args.head)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, sort_keys=True, ensure_ascii=False))
    else:
        print(result.message())
    return 0 if result.ok else EXIT_TAMPERED
