"""Which host ran a row, what machine that is, and which ceilings its efficiency is judged against.

The local executor runs every cell here: one machine, the session's own "matmul" (today's layout).
A remote executor's nodes each measure themselves (harness/execute/node.py); their records go into
the session's "hosts" in environment.json (host -> environment, machine fingerprint, ceilings) as they
arrive, and each row's efficiency uses the ceilings of the host that ran it. A host that an earlier
session of the folder measured as the same machine keeps that session's ceilings, as a resumed local
run keeps its first session's.
"""

from __future__ import annotations


def earlier_hosts(sessions: list[dict]) -> dict[str, dict]:
    """Each host's first record over a folder's sessions (a resumed run keeps the ceilings it began with)."""
    found: dict[str, dict] = {}
    for session in sessions:
        for host, record in (session.get("hosts") or {}).items():
            found.setdefault(host, {**record, "session": session.get("session")})
    return found


class HostBook:
    """Per host: its machine and ceilings; new hosts' records are written into this session as they arrive.

    `folder` (a RunFolder) receives new hosts' records; None keeps them here only. `ceilings` and `machine`
    stand for any host with no record (the local executor: this machine).
    """

    def __init__(self, folder=None, earlier: dict[str, dict] | None = None, ceilings: dict | None = None,
                 machine: str = "") -> None:
        self.folder, self.earlier = folder, earlier or {}
        self.default_ceilings, self.default_machine = ceilings, machine
        self.records: dict[str, dict] = {}

    def known(self) -> dict[str, str]:
        """host -> machine of the hosts whose ceilings are held (a node need not measure them again)."""
        return {host: record.get("machine", "") for host, record in self.earlier.items() if record.get("matmul")}

    def add(self, host: str, record: dict) -> None:
        """A host's record as its node sent it; the first for each host in this session is kept and written."""
        if not host or host in self.records:
            return
        earlier = self.earlier.get(host, {})
        if not record.get("matmul_measured") and earlier.get("machine") == record.get("machine"):
            record = {**record, "matmul": earlier.get("matmul", {}),
                      "matmul_source": f"session {earlier.get('session')} (the same machine)"}
        self.records[host] = record
        if self.folder is not None:
            self.folder.add_host(host, record)

    def ceilings(self, host: str) -> dict | None:
        record = self.records.get(host)
        return record.get("matmul") if record is not None else self.default_ceilings

    def machine(self, host: str) -> str:
        record = self.records.get(host) or self.earlier.get(host)
        return record.get("machine", "") if record is not None else self.default_machine
