#!/usr/bin/env python
"""Generate the synthetic demo data set (circles and squares, Roboflow COCO layout).

    python scripts/make_demo_dataset.py [--out datasets/demo] [--seed 0] [--train 240 --valid 60]

The same seed gives the same files; see ``rtmdet_keras/data/demo.py`` for what is drawn.
"""

import argparse
import time

from rtmdet_keras.data.demo import make_demo_dataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="datasets/demo", help="output folder (default: datasets/demo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=240, help="number of training images")
    parser.add_argument("--valid", type=int, default=60, help="number of validation images")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = make_demo_dataset(args.out, seed=args.seed, num_train=args.train, num_valid=args.valid)
    print(f"wrote {args.train} train + {args.valid} valid images to {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
