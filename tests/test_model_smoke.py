"""A first pass of the model over every cell: fit, predict, devices."""
import array_api_compat
import numpy as np

import mlp


def test_fit_and_predict_stay_on_the_device(cell):
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 8)), rng.integers(0, 3, 96)
    model = mlp.MLP([8, 5, 3], backend=cell.spec, dtype=cell.dtype, dropout=0.1)
    history = model.fit(x, y, epochs=2, batch_size=40)
    assert len(history["loss"]) == 2 and len(history["step_loss"]) == 6
    b = model.backend
    for out in (model(x), model.predict(x), model.predict_proba(x)):
        assert array_api_compat.device(out) == b.device
    for p in model.params:
        for a in p.values():
            assert array_api_compat.device(a) == b.device and a.dtype == b.dtype(cell.dtype)
