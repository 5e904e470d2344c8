"""Which CPU (and ONNX Runtime) a kernel table or calibrated profile was measured on, and whether this host is that.

A table measured on one CPU predicts another badly (an Intel Xeon table scored 0-2% within +-10% on an
AMD EPYC host), so tables and profiles record `CpuIdentity.as_dict()` and their targets compare it with
the host they run on. Another ONNX Runtime version may run other kernels (its graph rewrites and MLAS
code paths change between releases), so the version is part of the identity. Standard library only:
`measure` records it on the device.

Example:
    >>> here = this_cpu()
    >>> mismatch(here.as_dict(), here) is None
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the ISA extensions ONNX Runtime's CPU kernels pick their code paths by (MLAS: AVX2, AVX-512, VNNI, AMX)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")
UNKNOWN = "unknown"
ARM_FLAGS = ("asimd", "asimddp", "sve")
LEGACY_BLOCK = 16  # the NCHWc block of a table or profile with no CPU recorded: all were made on AVX-512 hosts


@dataclass(frozen=True)
class CpuIdentity:
    """CPU model name, vendor and the ORT-relevant ISA flags it has (`isa_hash`: 8 hex digits of them), and
    the ONNX Runtime version installed beside it (None: not installed, or not known)."""

    model: str
    vendor: str
    isa: tuple[str, ...] = ()
    onnxruntime: str | None = None

    @property
    def isa_hash(self) -> str:
        return hashlib.sha256(",".join(sorted(self.isa)).encode()).hexdigest()[:8]

    @property
    def slug(self) -> str:
        """The model name as a file-name part: `amd-epyc`, `intel-r-xeon-r-processor`."""
        return "-".join("".join(c if c.isalnum() else " " for c in self.model.lower()).split()) or UNKNOWN

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "vendor": self.vendor, "isa": list(self.isa), "isa_hash": self.isa_hash,
                "onnxruntime": self.onnxruntime}

    def __str__(self) -> str:
        return (f"{self.model} [{self.vendor}, isa {self.isa_hash}: {' '.join(self.isa) or '-'}; "
                f"onnxruntime {self.onnxruntime or '-'}]")


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


def ort_version() -> str | None:
    """The installed ONNX Runtime's version, from its package metadata (nothing is imported); None where no
    distribution provides `onnxruntime` (`onnxruntime`, `onnxruntime-gpu`, ...)."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version("onnxruntime")
    for dist in importlib.metadata.packages_distributions().get("onnxruntime", []):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return None


def this_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuIdentity:
    """The identity of the CPU this process runs on (model `unknown` where /proc/cpuinfo is missing), with
    the ONNX Runtime version installed here."""
    cpu = CpuIdentity(platform.processor() or UNKNOWN, UNKNOWN)
    with contextlib.suppress(OSError):
        cpu = parse_cpuinfo(Path(cpuinfo).read_text())
    return dataclasses.replace(cpu, onnxruntime=ort_version())


def nchwc_block(isa: Iterable[str]) -> int:
    """The NCHWc block ONNX Runtime's MLAS uses on a CPU with ISA flags `isa` (`/proc/cpuinfo` names).

    x86-64: 16 with AVX-512F (`avx512f`; Linux lists it only where the OS saves the AVX-512 state, which is
    MLAS's other condition), else 8 (SSE, AVX, AVX2). Arm (`asimd`, ...): 1, no NCHWc kernels: MLAS reports
    block 1 outside x86-64 unless ORT was built with `onnxruntime_USE_ARM_NEON_NCHWC` (the PyPI wheels are
    assumed not to be; unverified: no Arm ORT was run).

        >>> nchwc_block(["avx2", "avx512f"]), nchwc_block(["avx2", "fma"]), nchwc_block(["asimd"])
        (16, 8, 1)
    """
    flags = set(isa)
    if "avx512f" in flags:
        return 16
    return 1 if flags & set(ARM_FLAGS) else 8


def recorded_block(recorded: Mapping[str, Any] | None) -> int:
    """The NCHWc block of the CPU in a record (`CpuIdentity.as_dict()`); `LEGACY_BLOCK` where the record or
    its ISA flags are missing (a table recorded before CPUs, or their flags, were)."""
    isa = (recorded or {}).get("isa")
    return LEGACY_BLOCK if isa is None else nchwc_block(isa)


def mismatch(recorded: Mapping[str, Any] | None, here: CpuIdentity) -> str | None:
    """Why a table or profile measured on `recorded` (an `as_dict()`) does not describe `here`; None when it
    does. A record without a CPU (written before CPUs were recorded) is reported as unknown; one of another
    ONNX Runtime version, or of none recorded (written before versions were), does not describe `here`."""
    if not recorded:
        return f"measured on an unknown CPU (recorded before CPUs were); this host is {here.model}"
    if recorded.get("vendor") != here.vendor or recorded.get("model") != here.model:
        return f"measured on {recorded.get('model', UNKNOWN)}, used on {here.model}: re-calibrate on this host"
    if recorded.get("isa_hash") not in (None, here.isa_hash):
        theirs, ours = set(recorded.get("isa") or []), set(here.isa)
        return (f"measured on {recorded.get('model')} with other ISA extensions (there only: "
                f"{sorted(theirs - ours)}, here only: {sorted(ours - theirs)}): re-calibrate on this host")
    theirs_ort = recorded.get("onnxruntime")
    if theirs_ort != here.onnxruntime or theirs_ort is None:
        was = f"onnxruntime {theirs_ort}" if theirs_ort else "an unrecorded onnxruntime version"
        now = f"onnxruntime {here.onnxruntime}" if here.onnxruntime else "no onnxruntime"
        return (f"measured under {was}, this host has {now}: re-calibrate under it (`lepton-search calibrate "
                "--target host-cpu --kernels` for a kernel table, `--target <profile>` for a profile)")
    return None
