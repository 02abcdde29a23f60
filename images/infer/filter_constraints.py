"""Write a copy of constraints.txt without the pins of distributions the base image already has.

Used by images/infer/Dockerfile: vLLM pins its own torch, transformers, tokenizers, numpy, ...;
re-pinning them to the repository's CPU-test versions would replace vLLM's and break it. Every
other package keeps its pin. Usage: python filter_constraints.py IN OUT
"""
import importlib.metadata
import re
import sys


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(src: str, dst: str) -> None:
    installed = {canonical(d.metadata["Name"]) for d in importlib.metadata.distributions() if d.metadata["Name"]}
    kept, dropped = [], []
    for line in open(src, encoding="utf-8"):
        spec = line.split("#", 1)[0].strip()
        name = re.split(r"[\s<>=!~\[;]", spec, maxsplit=1)[0] if spec else ""
        if name and canonical(name) in installed:
            dropped.append(spec)
            continue
        kept.append(line)
    with open(dst, "w", encoding="utf-8") as out:
        out.writelines(kept)
    print(f"kept {sum(1 for k in kept if k.split('#', 1)[0].strip())} pins; "
          f"left to the base image: {', '.join(dropped) or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
