"""``python -m nyx.data.sample --out data/raw [--n-docs 300] [--seed 0] [--shards 3]``."""

from nyx.data.sample.write import main

raise SystemExit(main())
