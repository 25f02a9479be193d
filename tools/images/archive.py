"""Packs root filesystem folders into a docker-archive image (the format `docker load` and `ctr images import` read).

Each folder becomes one layer; tar entries are sorted, owned by root (unless the folder's `.owners` file names an
owner) and dated 1970, so the same inputs always give the same bytes and the same image id. Usage:

    archive.py OUT.tar --tag REF [--tag REF] --config CONFIG.json LAYER_DIR...

CONFIG.json holds the image's run settings (User, Entrypoint, Cmd, Env, WorkingDir, ExposedPorts, Labels).
"""
import argparse
import hashlib
import io
import json
import os
import sys
import tarfile


def layer_bytes(root: str) -> bytes:
    """One layer: every file, directory and symlink under root, in sorted order, with fixed metadata."""
    owners = {}
    owners_file = os.path.join(root, ".owners")
    if os.path.exists(owners_file):
        with open(owners_file) as f:
            for line in f:
                path, uid, gid = line.split()
                owners[path.strip("/")] = (int(uid), int(gid))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                entries.append(os.path.join(dirpath, name))
        for path in sorted(entries, key=lambda p: os.path.relpath(p, root)):
            rel = os.path.relpath(path, root)
            if rel == ".owners":
                continue
            info = tar.gettarinfo(path, arcname=rel)
            info.mtime = 0
            info.uid, info.gid = owners.get(rel, (0, 0))
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--tag", action="append", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("layers", nargs="+")
    args = parser.parse_args()
    with open(args.config) as f:
        run_config = json.load(f)

    layers = [layer_bytes(d) for d in args.layers]
    diff_ids = ["sha256:" + hashlib.sha256(b).hexdigest() for b in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": run_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"kproxy tools/images layer {i}"}
                    for i in range(len(layers))],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{
        "Config": config_name,
        "RepoTags": args.tag,
        "Layers": [d.split(":", 1)[1] + "/layer.tar" for d in diff_ids],
    }]

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))

        add(config_name, config_bytes)
        for digest, data in zip(diff_ids, layers):
            add(digest.split(":", 1)[1] + "/layer.tar", data)
        add("manifest.json", json.dumps(manifest).encode())
    os.replace(tmp, args.out)
    print(f"{args.out}: {', '.join(args.tag)} ({sum(len(b) for b in layers) // 1024} KiB in {len(layers)} layers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
