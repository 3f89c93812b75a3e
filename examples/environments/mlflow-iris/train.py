"""Train an iris classifier and save it with MLflow's own save_model (a folder with MLmodel).

    python train.py iris-mlflow      # needs mlflow-skinny, scikit-learn and pandas
It prints a few rows and MLflow's own pyfunc predictions for them, as JSON."""

import json
import sys

import mlflow.pyfunc
import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
iris = load_iris(as_frame=True)
X = iris.data.set_axis(COLUMNS, axis=1)
model = LogisticRegression(max_iter=500).fit(X, iris.target)
mlflow.sklearn.save_model(model, sys.argv[1], signature=infer_signature(X, model.predict(X)),
                          serialization_format="cloudpickle")
rows = X.iloc[[0, 60, 120, 7]]
loaded = mlflow.pyfunc.load_model(sys.argv[1])
print(json.dumps({"columns": COLUMNS, "rows": rows.values.tolist(), "predictions": loaded.predict(rows).tolist()}))
