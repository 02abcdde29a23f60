"""Container images, checked without a Docker engine: each Dockerfile's structure (pinned base,
non-root user, pinned pip installs, writable caches, no secrets), images/digests.yaml against
the Dockerfiles, the compiled pipelines and the Helm chart's values, and scripts/build_images.sh
driven by a stub `docker`."""
from __future__ import annotations

import importlib
import hashlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from guardsmith import __version__
from guardsmith.ops import images

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {kind: ROOT / "images" / folder / "Dockerfile" for kind, folder in images.IMAGE_DIRS.items()}
SECRET_WORDS = {"KEY", "TOKEN", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS",
                "APIKEY", "PRIVATE"}
SECRET_VALUES = [
    re.compile(r"AKIA[0-9A-Z]{16}"),                 # AWS access key id
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),            # Hugging Face token
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),     # GitHub token
    re.compile(r"\bsk-[A-Za-z0-9]{20,}"),            # OpenAI-style key
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]
CREDENTIAL_FILES = re.compile(
    r"(^|/)(\.env(\..*)?|\.aws|credentials(\.json)?|\.netrc|\.git-credentials|\.npmrc|\.pypirc|"
    r"\.dockercfg|config\.json|kubeconfig|\.kube|id_rsa.*|id_ed25519.*|.*\.pem|.*\.key|.*token.*|\.ssh)$",
    re.I)


@dataclass
class Instruction:
    op: str
    args: str
    line: int


def parse(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile (continuations joined, comments dropped)."""
    out: list[Instruction] = []
    buf, start = "", 0
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        op, _, args = buf.partition(" ")
        out.append(Instruction(op.upper(), args.strip(), start))
        buf = ""
    assert not buf, f"{path}: dangling line continuation"
    return out


def kv_pairs(args: str) -> dict[str, str]:
    """NAME=value pairs of an ENV/ARG/LABEL instruction (``ARG NAME`` gives an empty value)."""
    pairs = {}
    for token in shlex.split(args):
        name, sep, value = token.partition("=")
        pairs[name] = value if sep else ""
    return pairs


def resolve(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def base_image(instrs: list[Instruction]) -> str:
    pre_args = {}
    for ins in instrs:
        if ins.op == "FROM":
            return resolve(ins.args.split()[0], pre_args)
        if ins.op == "ARG":
            pre_args.update(kv_pairs(ins.args))
    raise AssertionError("no FROM")


def secret_name(name: str) -> bool:
    parts = set(name.upper().split("_"))
    return bool(parts & SECRET_WORDS) or name.upper().endswith(("KEY", "TOKEN"))


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, list[Instruction]]:
    kind = request.param
    return kind, parse(DOCKERFILES[kind])


# --------------------------------------------------------------------------- structural checks

def test_base_image_is_pinned_and_recorded(dockerfile: tuple[str, list[Instruction]]) -> None:
    kind, instrs = dockerfile
    froms = [i for i in instrs if i.op == "FROM"]
    assert len(froms) == 1, "one stage per image"
    image = base_image(instrs)
    name, _, digest = image.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    assert digest == "" or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
    assert tag and tag not in {"latest", "stable", "main", "nightly", "edge"}, f"{image}: not an exact tag"
    assert re.search(r"\d", tag), f"{image}: tag without a version"
    # the tag has its digest slot in images/digests.yaml (a placeholder until the first build)
    recorded, _ = images.load_bases()[kind]
    assert recorded == name, f"images/digests.yaml bases.{kind}.image {recorded} != Dockerfile's {name}"


def test_runs_as_a_numeric_non_root_user(dockerfile: tuple[str, list[Instruction]]) -> None:
    _, instrs = dockerfile
    users = [i for i in instrs if i.op == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].args.split(":")[0]
    assert user.isdigit() and int(user) > 0, f"final USER {users[-1].args!r} must be a numeric non-root uid"
    last_run = max(i.line for i in instrs if i.op == "RUN")
    assert users[-1].line > last_run, "USER must come after the last RUN"


def test_no_secrets_in_env_arg_or_labels(dockerfile: tuple[str, list[Instruction]]) -> None:
    kind, instrs = dockerfile
    for ins in instrs:
        if ins.op in ("ENV", "ARG", "LABEL"):
            for name, value in kv_pairs(ins.args).items():
                assert not (ins.op != "LABEL" and secret_name(name)), f"{kind}: {ins.op} {name} looks like a secret"
                for pattern in SECRET_VALUES:
                    assert not pattern.search(value), f"{kind}: {ins.op} {name} holds a credential-looking value"
        for pattern in SECRET_VALUES:
            assert not pattern.search(ins.args), f"{kind}: line {ins.line} holds a credential-looking value"
        if ins.op == "RUN":
            assert not re.search(r"(HF_TOKEN|AWS_SECRET_ACCESS_KEY|API_KEY)=\S", ins.args), f"{kind}: RUN sets a credential"


def test_no_credential_files_or_whole_context_copied(dockerfile: tuple[str, list[Instruction]]) -> None:
    kind, instrs = dockerfile
    for ins in instrs:
        if ins.op not in ("COPY", "ADD"):
            continue
        assert ins.op == "COPY", f"{kind}: use COPY, not ADD (line {ins.line})"
        parts = [p for p in shlex.split(ins.args) if not p.startswith("--")]
        sources = parts[:-1]
        assert sources, f"{kind}: COPY without source (line {ins.line})"
        for src in sources:
            assert src not in (".", "./", "*"), f"{kind}: line {ins.line} copies the whole build context"
            assert not CREDENTIAL_FILES.search(src.rstrip("/")), f"{kind}: line {ins.line} copies {src}"
            assert (ROOT / src).exists(), f"{kind}: COPY source {src} does not exist in the repository"


def test_pip_installs_are_pinned(dockerfile: tuple[str, list[Instruction]]) -> None:
    kind, instrs = dockerfile
    args = {}
    for ins in instrs:
        if ins.op == "ARG":
            args.update(kv_pairs(ins.args))
    installs = 0
    for ins in (i for i in instrs if i.op == "RUN"):
        commands: list[list[str]] = [[]]
        for token in shlex.split(ins.args):
            if token in ("&&", "||", ";"):
                commands.append([])
            else:
                commands[-1].append(token)
        for words in commands:
            command = " ".join(words)
            if "pip" not in " ".join(words[:4]) or "install" not in words:
                continue
            installs += 1
            assert "--constraint" in words or "-c" in words, f"{kind}: `{command}` without constraints.txt"
            tail = words[words.index("install") + 1:]
            skip_next = False
            for word in tail:
                if skip_next:
                    skip_next = False
                    continue
                if word in ("--constraint", "-c", "-r", "--requirement"):
                    skip_next = True
                    continue
                if word.startswith("-"):
                    continue
                spec = resolve(word, args)
                local = spec.startswith(("/", "./")) or "/build/" in spec
                named = re.match(r"^[A-Za-z0-9_.\-]+(\[[\w,]+\])?", spec)
                assert local or "==" in spec or (named and named.group(0) == spec and _in_constraints(spec)), \
                    f"{kind}: {word!r} is not pinned"
                if "==" in spec:
                    assert re.fullmatch(r"[\w.\-]+==\d[\w.+\-]*", spec), f"{kind}: {spec!r}: exact version needed"
    assert installs, f"{kind}: no pip install found"


def _in_constraints(name: str) -> bool:
    pins = {line.split("==")[0].strip().lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    return name.lower() in pins


def test_writable_hf_home_and_caches(dockerfile: tuple[str, list[Instruction]]) -> None:
    kind, instrs = dockerfile
    env: dict[str, str] = {}
    for ins in instrs:
        if ins.op == "ENV":
            env.update(kv_pairs(ins.args))
    uid = [i for i in instrs if i.op == "USER"][-1].args.split(":")[0]
    runs = " ".join(i.args for i in instrs if i.op == "RUN")
    for var in ("HF_HOME", "XDG_CACHE_HOME", "GUARDSMITH_CACHE", "HOME"):
        assert var in env, f"{kind}: {var} is not set"
    owned = re.findall(rf"chown -R {uid}(?::\d+)? ([^&]+)", runs)
    assert owned, f"{kind}: nothing is chowned to uid {uid}"
    owned_dirs = " ".join(owned).split()
    for var in ("HF_HOME", "XDG_CACHE_HOME", "GUARDSMITH_CACHE", "HOME"):
        path = env[var]
        assert any(path == d or path.startswith(d.rstrip("/") + "/") for d in owned_dirs), \
            f"{kind}: {var}={path} is not writable by uid {uid}"
    for kfp_dir in ("/gcs", "/minio", "/s3"):  # KFP v2 launcher artifact paths
        assert kfp_dir in owned_dirs, f"{kind}: {kfp_dir} is not writable by uid {uid}"
    assert "chmod 777" not in runs and "chmod -R 777" not in runs and "sudo" not in runs


def test_each_dockerfile_has_a_restrictive_dockerignore() -> None:
    for kind, path in DOCKERFILES.items():
        ignore = path.with_name("Dockerfile.dockerignore")
        assert ignore.exists(), f"{kind}: {ignore} missing"
        lines = [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        assert lines[0] == "*", f"{ignore}: should exclude everything, then re-include what the image copies"
        included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
        for ins in parse(path):
            if ins.op == "COPY":
                for src in [p for p in shlex.split(ins.args) if not p.startswith("--")][:-1]:
                    assert src.rstrip("/") in included, f"{ignore}: {src} is copied but ignored"


# --------------------------------------------------------------------------- one source of image names

def compiled_images() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    files = sorted(ROOT.glob("pipelines/*/pipeline.yaml")) + sorted(ROOT.glob("components/*/component.yaml"))
    assert files
    for path in files:
        spec = next(d for d in yaml.safe_load_all(path.read_text()) if d)
        for name, executor in spec["deploymentSpec"]["executors"].items():
            image = executor["container"]["image"]
            found.setdefault(image, set()).add(f"{path.relative_to(ROOT)}:{name}")
    return found


def test_compiled_pipelines_use_the_recorded_images() -> None:
    refs = images.image_refs()
    stray = {img: sorted(where)[:3] for img, where in compiled_images().items() if img not in refs.values()}
    assert not stray, (f"compiled pipelines name images that images/digests.yaml does not record: {stray}; "
                       "recompile with the pinned images (guardsmith.ops.images.image_env)")
    used = set(compiled_images())
    assert {refs["cpu"], refs["train"], refs["infer"]} <= used, "every image kind should be used by some task"


def test_chart_values_provide_the_same_images() -> None:
    values = yaml.safe_load((ROOT / "helm" / "guardsmith" / "values.yaml").read_text())
    records = images.load_digests()
    for kind, rec in records.items():
        assert values["images"][kind] == {"repository": rec.repository, "tag": rec.tag, "digest": rec.digest}, \
            f"helm values images.{kind} differ from images/digests.yaml: run scripts/sync_chart_files.py"
    chart = yaml.safe_load((ROOT / "helm" / "guardsmith" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


def test_unbuilt_images_match_the_kfp_default_names(monkeypatch: pytest.MonkeyPatch) -> None:
    kfp_support = importlib.import_module("guardsmith.kfp_support")
    for kind, rec in images.load_digests().items():
        monkeypatch.delenv(f"GUARDSMITH_IMAGE_{kind.upper()}", raising=False)
        if not rec.pinned:  # placeholder: the compile default must be the same repository:tag
            assert kfp_support.image(kind) == rec.ref


def test_digests_file_renders_stably() -> None:
    text = images.digests_path().read_text()
    assert images.render_digests(images.load_digests(), images.load_bases()) == text


# --------------------------------------------------------------------------- build script

STUB = r"""#!/usr/bin/env bash
# stub docker: logs its arguments, answers buildx, writes build metadata
echo "$*" >> "$STUB_LOG"
if [ "$1 $2" = "buildx version" ]; then echo "github.com/docker/buildx v0.0.0-stub"; exit 0; fi
if [ "$1 $2 $3" = "buildx imagetools inspect" ]; then
  echo '{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:'"$(printf '%064d' 7)"'","size":1}'
  exit 0
fi
if [ "$1 $2" = "buildx build" ]; then
  shift 2
  while [ $# -gt 0 ]; do
    case "$1" in --metadata-file) meta=$2; shift ;; --tag) tag=$2; shift ;; esac
    shift
  done
  sum=$(printf '%s' "$tag" | sha256sum | cut -d' ' -f1)
  printf '{"containerimage.digest": "sha256:%s"}' "$sum" > "$meta"
  exit 0
fi
echo "stub docker: unexpected $*" >&2; exit 2
"""


def test_build_script_builds_pushes_and_records_digests(tmp_path: Path) -> None:
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    (stub_bin / "docker").write_text(STUB)
    (stub_bin / "docker").chmod(0o755)
    digests = tmp_path / "digests.yaml"
    digests.write_text(images.digests_path().read_text())
    log = tmp_path / "docker.log"
    env = {**os.environ, "PATH": f"{stub_bin}:{os.environ['PATH']}", "STUB_LOG": str(log),
           "REGISTRY": "registry.test:5000/ml/", "TAG": "9.9.9", "PYTHON": sys.executable,
           "GUARDSMITH_IMAGE_DIGESTS": str(digests)}
    script = ROOT / "scripts" / "build_images.sh"
    proc = subprocess.run(["bash", str(script), "cpu", "infer"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = images.load_digests(digests)
    for kind in ("cpu", "infer"):
        tagged = f"registry.test:5000/ml/guardsmith-{kind}:9.9.9"
        assert records[kind].repository == f"registry.test:5000/ml/guardsmith-{kind}"
        assert records[kind].digest == "sha256:" + hashlib.sha256(tagged.encode()).hexdigest()
    assert not records["train"].pinned
    bases = images.load_bases(digests)
    assert bases["cpu"][1] == "sha256:" + "0" * 63 + "7" and bases["train"][1] == ""
    builds = [line for line in log.read_text().splitlines() if line.startswith("buildx build")]
    assert len(builds) == 2
    cpu = builds[0].split()
    assert "images/base/Dockerfile" in cpu and "--push" in cpu
    assert f"BASE_IMAGE={bases['cpu'][0]}@{bases['cpu'][1]}" in cpu
    # a second run reuses the recorded base digests: no more imagetools lookups
    log.write_text("")
    proc = subprocess.run(["bash", str(script), "cpu"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "imagetools" not in log.read_text()
    bad = subprocess.run(["bash", str(script), "gpu"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown image kind" in bad.stderr
    no_registry = {k: v for k, v in env.items() if k != "REGISTRY"}
    proc = subprocess.run(["bash", str(script)], env=no_registry, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "REGISTRY" in proc.stderr


BAD_DOCKERFILES = {
    test_runs_as_a_numeric_non_root_user: "FROM python:3.11.14-slim\nRUN true\nUSER root\n",
    test_no_secrets_in_env_arg_or_labels: "FROM python:3.11.14-slim\nENV HF_TOKEN=x\nUSER 10001\n",
    test_no_credential_files_or_whole_context_copied: "FROM python:3.11.14-slim\nCOPY .env /app/\nUSER 10001\n",
    test_pip_installs_are_pinned: "FROM python:3.11.14-slim\nRUN pip install -c c.txt requests \\\n  numpy>=2\nUSER 1\n",
}


@pytest.mark.parametrize("check", list(BAD_DOCKERFILES), ids=lambda f: f.__name__)
def test_the_checks_catch_bad_dockerfiles(check, tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(BAD_DOCKERFILES[check])
    with pytest.raises(AssertionError):
        check(("bad", parse(path)))
    assert secret_name("AWS_SECRET_ACCESS_KEY") and secret_name("GITHUB_TOKEN") and not secret_name("TOKENIZERS_PARALLELISM")
