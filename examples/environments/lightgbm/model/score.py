"""LightGBM regressor: online, {"data": [[x0, x1, x2, x3], ...]} -> predictions; batch, a list of CSV
files (header x0,x1,x2,x3) -> one prediction per row."""

import csv
import json
import os

import lightgbm as lgb
import numpy as np


def init():
    global booster
    booster = lgb.Booster(model_file=os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt"))


def run(raw_data):
    if isinstance(raw_data, list):  # a batch mini-batch: file paths
        rows = []
        for path in raw_data:
            with open(path, newline="") as fh:
                rows += [[float(v) for v in row] for row in list(csv.reader(fh))[1:]]
        return booster.predict(np.asarray(rows)).tolist()
    return booster.predict(np.asarray(json.loads(raw_data)["data"], dtype=float)).tolist()
