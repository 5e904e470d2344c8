"""Which CPU a kernel table or calibrated profile was measured on, and whether this host is that CPU.

A table measured on one CPU predicts another badly (an Intel Xeon table scored 0-2% within +-10% on an
AMD EPYC host), so tables and profiles record `CpuIdentity.as_dict()` and their targets compare it with
the host they run on. Standard library only: `measure` records it on the device.

Example:
    >>> here = this_cpu()
    >>> mismatch(here.as_dict(), here) is None
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the ISA extensions ONNX Runtime's CPU kernels pick their code paths by (MLAS: AVX2, AVX-512, VNNI, AMX)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class CpuIdentity:
    """CPU model name, vendor and the ORT-relevant ISA flags it has (`isa_hash`: 8 hex digits of them)."""

    model: str
    vendor: str
    isa: tuple[str, ...] = ()

    @property
    def isa_hash(self) -> str:
        return hashlib.sha256(",".join(sorted(self.isa)).encode()).hexdigest()[:8]

    @property
    def slug(self) -> str:
        """The model name as a file-name part: `amd-epyc`, `intel-r-xeon-r-processor`."""
        return "-".join("".join(c if c.isalnum() else " " for c in self.model.lower()).split()) or UNKNOWN

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "vendor": self.vendor, "isa": list(self.isa), "isa_hash": self.isa_hash}

    def __str__(self) -> str:
        return f"{self.model} [{self.vendor}, isa {self.isa_hash}: {' '.join(self.isa) or '-'}]"


def parse_cpuinfo(text: str) -> CpuIdentity:
    """The identity in a `/proc/cpuinfo` text (x86 `model name`/`vendor_id`/`flags`, Arm `Features`)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    model = fields.get("model name") or fields.get("hardware") or platform.processor() or UNKNOWN
    vendor = fields.get("vendor_id") or fields.get("cpu implementer") or UNKNOWN
    return CpuIdentity(model, vendor, tuple(f for f in ISA_FLAGS if f in flags))


def this_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuIdentity:
    """The identity of the CPU this process runs on (model `unknown` where /proc/cpuinfo is missing)."""
    with contextlib.suppress(OSError):
        return parse_cpuinfo(Path(cpuinfo).read_text())
    return CpuIdentity(platform.processor() or UNKNOWN, UNKNOWN)


def mismatch(recorded: Mapping[str, Any] | None, here: CpuIdentity) -> str | None:
    """Why a table or profile measured on `recorded` (an `as_dict()`) does not describe `here`; None when it
    does. A record without a CPU (written before CPUs were recorded) is reported as unknown."""
    if not recorded:
        return f"measured on an unknown CPU (recorded before CPUs were); this host is {here.model}"
    if recorded.get("vendor") != here.vendor or recorded.get("model") != here.model:
        return f"measured on {recorded.get('model', UNKNOWN)}, used on {here.model}: re-calibrate on this host"
    if recorded.get("isa_hash") not in (None, here.isa_hash):
        theirs, ours = set(recorded.get("isa") or []), set(here.isa)
        return (f"measured on {recorded.get('model')} with other ISA extensions (there only: "
                f"{sorted(theirs - ours)}, here only: {sorted(ours - theirs)}): re-calibrate on this host")
    return None
