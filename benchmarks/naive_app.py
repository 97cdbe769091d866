"""The naive baseline of benchmarks/serve.py: what the original project did.

A minimal FastAPI app that loads the bundle's `.keras` files and calls `model.predict` per
request; no auth, no logging. Run: `python -m benchmarks.naive_app BUNDLE_DIR PORT`. A text
model that reads a sentence embedding gets it from the bundle's encoder, as in serving.
"""

from __future__ import annotations

import sys
from typing import Annotated

import numpy as np
import uvicorn
from fastapi import FastAPI, File, Form, UploadFile


def build(bundle: str) -> FastAPI:
    import json
    from pathlib import Path

    import keras

    import models.training.builders  # noqa: F401  (registers the custom layers for load_model)
    from models.preprocessing import combine_text, load_image
    from models.runtime import bundle_sentence_encoder
    from models.sentence_encoder import SENTENCE_INPUT

    meta = json.loads((Path(bundle) / "metadata.json").read_text())
    size = int(meta.get("image_size", 96))
    text_model = keras.models.load_model(Path(bundle) / "text.keras")
    image_model = keras.models.load_model(Path(bundle) / "image.keras")
    fusion_model = keras.models.load_model(Path(bundle) / "fusion.keras")
    encoder = bundle_sentence_encoder(Path(bundle), meta)
    app = FastAPI()

    def text_inputs(text: str) -> dict:
        inputs = {"text": np.array([text], dtype=object)}
        if encoder is not None:
            inputs[SENTENCE_INPUT] = encoder.encode([text])
        return inputs

    @app.post("/predict")
    def predict(
        designation: Annotated[str, Form()] = "",
        description: Annotated[str, Form()] = "",
        image: Annotated[UploadFile | None, File()] = None,
    ) -> dict:
        text = combine_text(designation, description)
        pixels = load_image(image.file.read(), size)[None] if image is not None else None
        if text and pixels is not None:
            probs = fusion_model.predict({**text_inputs(text), "image": pixels}, verbose=0)[0]
        elif text:
            probs = text_model.predict(text_inputs(text), verbose=0)[0]
        else:
            probs = image_model.predict({"image": pixels}, verbose=0)[0]
        best = int(np.argmax(probs))
        return {"prdtypecode": meta["labels"][best], "probability": float(probs[best])}

    return app


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
