#!/usr/bin/env bash
# Build and push the guardsmith images and record their digests in images/digests.yaml.
#
#   REGISTRY=ghcr.io/my-org scripts/build_images.sh              # cpu, train and infer
#   REGISTRY=registry.example.com:5000/ml scripts/build_images.sh cpu infer
#
# Each image kind is built from images/<dir>/Dockerfile (cpu: base, train: train, infer: infer)
# with the repository root as build context, pushed as $REGISTRY/guardsmith-<kind>:$TAG, and its
# pushed manifest digest is written to images/digests.yaml. `guardsmith pipeline compile` then pins
# the compiled pipelines to repository@digest (guardsmith.ops.images.image_env), and
# scripts/sync_chart_files.py copies the same references into the Helm chart's values.
#
# Base images: each Dockerfile names an exact tag (ARG BASE_IMAGE). On the first build the digest
# that tag resolves to is recorded under `bases:` in images/digests.yaml; every build passes
# BASE_IMAGE=<tag>@<digest>, so rebuilds use the same base layers until the record is changed.
#
# Environment:
#   REGISTRY   registry/namespace prefix (required)
#   TAG        image tag (default: the guardsmith package version)
#   PLATFORM   target platform (default linux/amd64; the GPU images are amd64-only)
#   PUSH       1 (default) push and record digests; 0 build into the local image store only
#   PYTHON     an interpreter that can import guardsmith (default .venv/bin/python, else python3)
#   GUARDSMITH_IMAGE_DIGESTS  digests file to update (default images/digests.yaml)
# Needs docker with buildx (BuildKit). Registry login (docker login) is up to the caller; no
# credential is passed into a build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
DEPLOY=("$PYTHON" -m guardsmith deploy)
REGISTRY=${REGISTRY:?set REGISTRY, e.g. REGISTRY=ghcr.io/my-org make images}
REGISTRY=${REGISTRY%/}
TAG=${TAG:-$("$PYTHON" -c 'import guardsmith; print(guardsmith.__version__)')}
PLATFORM=${PLATFORM:-linux/amd64}
PUSH=${PUSH:-1}

if [ $# -eq 0 ]; then set -- cpu train infer; fi

dockerfile_dir() {
  case "$1" in
    cpu) echo base ;;
    train) echo train ;;
    infer) echo infer ;;
    *) echo "build_images.sh: unknown image kind '$1' (cpu, train, infer)" >&2; return 1 ;;
  esac
}

json_field() {  # json_field FILE KEY: print a top-level string field of a JSON file
  "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

command -v docker >/dev/null || { echo "build_images.sh: docker is not on PATH" >&2; exit 1; }
docker buildx version >/dev/null || { echo "build_images.sh: docker buildx is needed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for kind in "$@"; do
  dir=$(dockerfile_dir "$kind")
  image="$REGISTRY/guardsmith-$kind"

  base=$("${DEPLOY[@]}" base-image "$kind")
  if [[ "$base" != *@sha256:* ]]; then
    echo "==> resolving base image $base"
    docker buildx imagetools inspect "$base" --format '{{json .Manifest}}' > "$work/base-$kind.json"
    base=$("${DEPLOY[@]}" record-base "$kind" --digest "$(json_field "$work/base-$kind.json" digest)")
  fi

  echo "==> building $image:$TAG from images/$dir/Dockerfile on $base"
  args=(buildx build
        --file "images/$dir/Dockerfile"
        --platform "$PLATFORM"
        --build-arg "BASE_IMAGE=$base"
        --build-arg "GUARDSMITH_VERSION=$TAG"
        --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
        --tag "$image:$TAG"
        --metadata-file "$work/$kind.json")
  if [ "$PUSH" = 1 ]; then args+=(--push); else args+=(--load); fi
  docker "${args[@]}" .

  if [ "$PUSH" = 1 ]; then
    digest=$(json_field "$work/$kind.json" containerimage.digest)
    "${DEPLOY[@]}" record-digest "$kind" --repository "$image" --tag "$TAG" --digest "$digest"
  else
    echo "    PUSH=0: $image:$TAG built locally; no digest recorded"
  fi
done

echo "==> images/digests.yaml updated; next: guardsmith pipeline compile (pins the digests) and"
echo "    python scripts/sync_chart_files.py (chart values and pipeline copies)"
