"""Train a small LightGBM regressor and save it beside score.py (model/model.txt).

Run it with any Python that has lightgbm (the environment's own interpreter works):
    python train.py model
It prints a few rows and LightGBM's own predictions for them, as JSON."""

import json
import sys

import lightgbm as lgb
import numpy as np

COLUMNS = ["x0", "x1", "x2", "x3"]
rng = np.random.default_rng(0)
X = rng.normal(size=(200, 4))
y = X[:, 0] * 3 + X[:, 1] - X[:, 2] + rng.normal(scale=0.1, size=200)
booster = lgb.train({"objective": "regression", "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 20)
booster.save_model(sys.argv[1] + "/model.txt")
rows = X[:5].tolist()
print(json.dumps({"columns": COLUMNS, "rows": rows, "predictions": booster.predict(np.asarray(rows)).tolist()}))
