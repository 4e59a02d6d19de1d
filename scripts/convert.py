"""Convert an image folder (or its archive) to ArrayRecord shards for streaming.

    python scripts/convert.py photos/ out/ [--shards 8]
    python scripts/train.py --config configs/cifar10_cnn.py --config.data.name=arrayrecord:out \
        --config.data.on_device=no

Writes, for train, test and val (if the folder has val/ beside test/),
`out/<split>-NNNNN-of-NNNNN.array_record` (each record: a 4-byte little-endian label,
then the image file's bytes, unchanged: decoded when streamed), `out/<split>-labels.npy` (the
labels, so a run reads them without opening a record) and `out/dataset.json` (class names,
counts per class and shards per split). The folder's layout, order and limits are the folder
reader's (`jaxcnn/data/folder.py`): records are in its order, by class then path.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn.errors import UserError  # noqa: E402


def convert(src: str, out: str, shards: int = 4, cache_dir: str | None = None) -> dict:
    """Write the ArrayRecord copy of the folder `src` into `out`; returns dataset.json's dict."""
    import numpy as np
    from array_record.python.array_record_module import ArrayRecordWriter

    from jaxcnn.data import stream

    if shards < 1:
        raise UserError(f"--shards must be at least 1, got {shards}")
    source = stream.open_stream(f"folder:{src}", cache_dir=cache_dir)
    os.makedirs(out, exist_ok=True)
    index = {"class_names": list(source.class_names), "splits": {}}
    val = () if source.val is None else (("val", source.val),)  # a folder's val/ beside test/
    for split, records in (("train", source.train), ("test", source.test), *val):
        k = min(shards, len(records))
        bounds = np.linspace(0, len(records), k + 1).astype(int)
        names = []
        for s in range(k):
            name = f"{split}-{s:05d}-of-{k:05d}.array_record"
            writer = ArrayRecordWriter(os.path.join(out, name), "group_size:1")
            try:
                for i in range(bounds[s], bounds[s + 1]):
                    writer.write(stream.LABEL.pack(int(records.labels[i])) + records[i])
            finally:
                writer.close()
            names.append(name)
        np.save(os.path.join(out, f"{split}-labels.npy"), records.labels.astype(np.int32))
        counts = np.bincount(records.labels, minlength=source.num_classes)
        index["splits"][split] = {"shards": names, "labels": f"{split}-labels.npy",
                                  "count": len(records), "per_class": counts.tolist()}
    with open(os.path.join(out, stream.INDEX_FILE), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return index


def main(argv: list[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="image folder or .tar.gz/.zip archive (train/ and test/)")
    p.add_argument("out", help="output directory")
    p.add_argument("--shards", type=int, default=4, help="shards per split")
    p.add_argument("--cache-dir", default=None, help="where an archive is extracted")
    args = p.parse_args(argv[1:])
    try:
        index = convert(args.src, args.out, args.shards, args.cache_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{s} {v['count']}" for s, v in index["splits"].items())
    print(f"wrote {args.out}: {counts} records, {len(index['class_names'])} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
