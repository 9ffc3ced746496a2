"""The emulated board environment: an aarch64 Python sysroot, the board's wheels, a per-core view.

Built once per (architecture, Python, interpreter, numpy) and cached under ``$EDGEKD_CACHE/boardenv``
(default ``~/.cache/edgekd/boardenv``):

- ``sysroot/``: Debian arm64 packages of python3.11 and the C/C++ runtime, fetched with a private apt
  configuration (its own lists, cache and status; the host's dpkg is never touched) and unpacked with
  ``dpkg -x``;
- ``site/``: what ``pip install edgekd[device]`` puts on a board (numpy + ai-edge-litert), aarch64 wheels
  installed with ``pip --target --platform ... --only-binary=:all:``;
- ``cores/<core>/``: the root QEMU sees (``-L``) for one core: symlinks to the sysroot plus a fake
  ``/proc/cpuinfo`` and ``/sys/devices/system/cpu/{possible,present}``. QEMU does not fake them, and without
  them XNNPACK is silently not used; the cpuinfo ``Features`` line must match the pinned core.

Every failure that a user can fix (no qemu, no network) raises :class:`EmulationUnavailable` (exit 2).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from edgekd.device.errors import EdgekdError
from edgekd.device.targets import BoardCore

log = logging.getLogger(__name__)

ENV_CACHE = "EDGEKD_CACHE"
QEMU = {"aarch64": "qemu-aarch64-static"}
DEBIAN_ARCH = {"aarch64": "arm64"}
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"
PYTHON = "python3.11"
# python3.11 pulls libc6, libgcc-s1 etc.; the interpreter's wheel also needs the C++ runtime.
DEBIAN_PACKAGES = (PYTHON, "libstdc++6")
# ai-edge-litert 2.x aarch64 wheels are tagged manylinux_2_27 only; older pip does not expand tags, so list them.
WHEEL_PLATFORMS = ("manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
INTERPRETER_DIST = "ai-edge-litert"
READY = ".ready"


class EmulationUnavailable(EdgekdError):
    """Emulation cannot run here (no qemu, no network for the packages): nothing was checked."""


@dataclasses.dataclass(frozen=True)
class BoardEnv:
    """A ready emulated environment for one core."""
    arch: str
    core: BoardCore
    root: Path          # the per-core view QEMU uses as its -L prefix
    site: Path          # the board's site-packages (numpy + interpreter)
    qemu: str
    interpreter: str    # e.g. "ai-edge-litert 2.3.0"
    numpy: str

    def argv(self, script: Path, *args: str) -> list[str]:
        """The command that runs ``script`` with the board's python3.11 under QEMU."""
        return [self.qemu, "-L", str(self.root), str(self.root / "usr/bin" / PYTHON), "-s", "-E",
                str(script), *args]

    def environ(self) -> dict[str, str]:
        """Environment for :meth:`argv`: the core pinned, only the board's site-packages importable."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))}
        # -E above makes python ignore PYTHONPATH, so the site folder is passed through the runner's argv
        # instead; QEMU_CPU pins the emulated core (QEMU's default 'max' has SME and breaks XNNPACK int8).
        env["QEMU_CPU"] = self.core.qemu_cpu
        return env


def cache_root() -> Path:
    env = os.environ.get(ENV_CACHE)
    base = Path(env) if env else Path.home() / ".cache" / "edgekd"
    return base / "boardenv"


def host_versions() -> tuple[str, str]:
    """The host's interpreter and numpy versions: the board gets the same, so only the ISA differs."""
    try:
        return metadata.version(INTERPRETER_DIST), metadata.version("numpy")
    except metadata.PackageNotFoundError:
        raise EdgekdError(f"{INTERPRETER_DIST} is not installed on the host", field="interpreter",
                          fix="pip install 'edgekd[device]'") from None


def ensure_env(arch: str, core: BoardCore, cores: int, *, cache: Path | None = None) -> BoardEnv:
    """A ready environment for ``arch``/``core``: reused from the cache, else built (downloads ~30 MB)."""
    qemu = find_qemu(arch)
    litert, numpy_version = host_versions()
    base = (cache or cache_root()) / f"{arch}-cp311-litert{litert}-numpy{numpy_version}"
    if not (base / READY).is_file():
        start = time.perf_counter()
        _build(base, arch, litert, numpy_version)
        log.info("board environment %s built in %.0f s", base, time.perf_counter() - start)
    root = _core_view(base, core, cores)
    return BoardEnv(arch=arch, core=core, root=root, site=base / "site", qemu=qemu,
                    interpreter=f"{INTERPRETER_DIST} {litert}", numpy=numpy_version)


def find_qemu(arch: str) -> str:
    if arch not in QEMU:
        raise EmulationUnavailable(f"no emulation for architecture '{arch}'", field="cpu.arch",
                                   fix=f"architectures that can be checked: {', '.join(QEMU)}")
    path = shutil.which(QEMU[arch])
    if path is None:
        raise EmulationUnavailable(f"{QEMU[arch]} is not installed: the board's instruction set cannot be "
                                   "emulated, nothing was checked",
                                   fix="apt-get install qemu-user-static (Debian/Ubuntu)")
    return path


def _build(base: Path, arch: str, litert: str, numpy_version: str) -> None:
    """Sysroot + wheels into a temporary sibling, renamed into place when complete."""
    base.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{base.name}.", dir=base.parent))
    try:
        _sysroot(work, arch)
        _wheels(work / "site", litert, numpy_version)
        (work / READY).write_text(f"{INTERPRETER_DIST}=={litert} numpy=={numpy_version}\n")
        _publish(work, base)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _run(argv: list[str], what: str, fix: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise EmulationUnavailable(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}", fix=fix)
    return proc.stdout


def _sysroot(work: Path, arch: str) -> None:
    """Debian arm64 python3.11 + runtime libraries unpacked into ``work/sysroot`` (no root, no host dpkg)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise EmulationUnavailable("apt-get/dpkg not found: the board's Python sysroot cannot be fetched",
                                   fix="run the check on a Debian/Ubuntu host")
    apt = work / "apt"
    for sub in ("lists/partial", "archives/partial", "etc/apt.conf.d", "etc/preferences.d", "none"):
        (apt / sub).mkdir(parents=True)
    (apt / "status").touch()
    (apt / "sources.list").write_text(f"deb [arch={DEBIAN_ARCH[arch]}] {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n")
    conf = apt / "apt.conf"
    conf.write_text("\n".join([
        f'APT::Architecture "{DEBIAN_ARCH[arch]}";', f'APT::Architectures {{ "{DEBIAN_ARCH[arch]}"; }};',
        f'Dir::State "{apt}";', f'Dir::State::Lists "{apt}/lists";', f'Dir::State::status "{apt}/status";',
        f'Dir::Cache "{apt}";', f'Dir::Cache::archives "{apt}/archives";',
        f'Dir::Etc::SourceList "{apt}/sources.list";', f'Dir::Etc::SourceParts "{apt}/none";',
        f'Dir::Etc::Parts "{apt}/etc/apt.conf.d";', f'Dir::Etc::PreferencesParts "{apt}/etc/preferences.d";',
        f'Dir::Etc::Preferences "{apt}/etc/preferences";', ""]))
    env = {**os.environ, "APT_CONFIG": str(conf)}
    offline = f"the host needs network access to {DEBIAN_MIRROR} (or a warm cache in {cache_root()})"
    _run(["apt-get", "update", "-q"], "apt-get update (arm64 package lists)", offline, env)
    if not any((apt / "lists").glob("*Packages*")):
        raise EmulationUnavailable(f"apt-get update fetched no arm64 package list from {DEBIAN_MIRROR}",
                                   fix=offline)
    plan = _run(["apt-get", "install", "-s", "--no-install-recommends", *DEBIAN_PACKAGES],
                "apt-get install -s (dependency closure)", offline, env)
    packages = [line.split()[1] for line in plan.splitlines() if line.startswith("Inst ")]
    _download(packages, apt / "archives", env, offline)
    sysroot = work / "sysroot"
    for deb in sorted((apt / "archives").glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(sysroot)], f"dpkg -x {deb.name}", "re-run; the download may be corrupt")
    if not (sysroot / "usr/bin" / PYTHON).is_file():
        raise EmulationUnavailable(f"the unpacked sysroot has no usr/bin/{PYTHON}", file=sysroot,
                                   fix=f"check that {DEBIAN_SUITE} still ships {PYTHON}")
    shutil.rmtree(apt)  # lists and .debs: ~30 MB not needed once unpacked


def _download(packages: list[str], folder: Path, env: dict[str, str], fix: str) -> None:
    proc = subprocess.run(["apt-get", "download", "-q", *packages], cwd=folder, capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise EmulationUnavailable(f"apt-get download failed (exit {proc.returncode}): {' | '.join(tail)}",
                                   fix=fix)


def _wheels(site: Path, litert: str, numpy_version: str) -> None:
    platforms = [arg for tag in WHEEL_PLATFORMS for arg in ("--platform", tag)]
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-input", "--disable-pip-version-check",
          "--target", str(site), *platforms, "--python-version", "3.11", "--implementation", "cp",
          "--abi", "cp311", "--only-binary=:all:", f"numpy=={numpy_version}", f"{INTERPRETER_DIST}=={litert}"],
         "pip install of the board's aarch64 wheels",
         f"the host needs network access to PyPI (numpy=={numpy_version}, {INTERPRETER_DIST}=={litert} for "
         "aarch64), or a warm cache")


def _core_view(base: Path, core: BoardCore, cores: int) -> Path:
    """``base/cores/<name>``: the sysroot's top-level entries as symlinks, plus the core's fake cpuinfo."""
    view = base / "cores" / core.name
    cpuinfo = cpuinfo_text(core, cores)
    if (view / "proc/cpuinfo").is_file() and (view / "proc/cpuinfo").read_text() == cpuinfo:
        return view
    work = Path(tempfile.mkdtemp(prefix=f".{core.name}.", dir=base))
    for entry in (base / "sysroot").iterdir():
        (work / entry.name).symlink_to(entry)
    (work / "proc").mkdir()
    (work / "proc/cpuinfo").write_text(cpuinfo)
    cpus = work / "sys/devices/system/cpu"
    cpus.mkdir(parents=True)
    for name in ("possible", "present", "online"):
        (cpus / name).write_text(f"0-{cores - 1}\n" if cores > 1 else "0\n")
    view.parent.mkdir(exist_ok=True)
    _publish(work, view)
    return view


def _publish(work: Path, dest: Path) -> None:
    """Rename the finished ``work`` folder to ``dest``; a concurrent check that got there first wins."""
    if dest.exists():
        shutil.rmtree(dest, ignore_errors=True)  # stale (not ready, or another core's cpuinfo)
    try:
        os.replace(work, dest)
    except OSError:  # another process published dest in between: theirs is as good as ours
        shutil.rmtree(work, ignore_errors=True)


def cpuinfo_text(core: BoardCore, cores: int) -> str:
    """An aarch64 Linux ``/proc/cpuinfo`` for ``cores`` cores of ``core`` (what the board's kernel prints)."""
    block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: {core.implementer}\n"
             "CPU architecture: 8\nCPU variant\t: {core.variant}\nCPU part\t: {core.part}\n"
             "CPU revision\t: {core.revision}\n\n")
    features = " ".join(core.cpuinfo_features)
    return "".join(block.format(i=i, features=features, core=core) for i in range(cores))
