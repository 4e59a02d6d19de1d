"""A research model registered by name trains, resumes, loads back and exports like a built-in
one; fine-tuning refuses the airbench optimizer fields it would not apply."""

import numpy as np
import pytest
from conftest import QUIET, small_digits
from flax import nnx

from jaxcnn import export, inference, models, serving, train_and_evaluate
from jaxcnn.config import check_config, default_config
from jaxcnn.errors import UserError


@models.register("tiny_mlp_test")
class TinyMLP(nnx.Module):
    """Flatten, one hidden layer: a model jaxcnn does not ship."""

    HEAD = "out"

    def __init__(self, num_classes, *, dtype, param_dtype, rngs):
        self.hidden = nnx.Linear(32 * 32 * 3, 16, dtype=dtype, param_dtype=param_dtype,
                                 rngs=rngs)
        self.out = nnx.Linear(16, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x_BxHxWxC, train=False):
        return self.out(nnx.relu(self.hidden(x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1))))


def test_a_registered_model_goes_through_a_workdir(tmp_path):
    c = default_config()
    c.model.name, c.data.name = "tiny_mlp_test", "digits"
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 1, 64, 100
    data = small_digits(256)
    train_and_evaluate(c, str(tmp_path), dataset=data, **QUIET)
    c.train.epochs = 2  # resumed by name from the checkpoint
    r = train_and_evaluate(c, str(tmp_path), dataset=data, **QUIET)
    assert [h["epoch"] for h in r.history] == [1, 2]
    run = inference.load_run(str(tmp_path))  # rebuilt from config.json and the meta, by name
    assert isinstance(run.model, TinyMLP)
    logits = inference.predict_logits(run.model, data.test_images, run.config)
    assert np.mean(logits.argmax(-1) == data.test_labels) == pytest.approx(
        r.final["test_accuracy"])
    export.export_run(run, str(tmp_path / "export"), platforms=("cpu",))
    served = serving.classify(serving.load(str(tmp_path / "export")), data.test_images)
    np.testing.assert_allclose(served["probabilities"].argmax(-1), logits.argmax(-1))


def test_a_taken_name_is_refused():
    with pytest.raises(UserError, match="model name 'cnn' is taken by CNN: register yours under "
                                        "another name"):
        models.register("cnn")(TinyMLP)
    assert models.register("tiny_mlp_test")(TinyMLP) is TinyMLP  # the same class again: fine
    with pytest.raises(UserError, match="Headless has no HEAD: set the class attribute HEAD"):
        models.register("headless_test")(type("Headless", (nnx.Module,), {}))


def test_fine_tuning_refuses_the_airbench_optimizer_fields():
    from configs.cifar10_airbench import get_config
    c = get_config()
    c.finetune.init_from = "runs/anything"
    with pytest.raises(UserError, match=r"fine-tuning \(--init-from\) does not apply "
                                        r"optim.decoupled_hparams=True, optim.bias_lr_scale=64.0, "
                                        r"optim.whiten_bias_epochs=3, optim.lookahead_every=5"):
        check_config(c)
    for k, off in {"decoupled_hparams": False, "bias_lr_scale": 1.0, "whiten_bias_epochs": 0,
                   "lookahead_every": 0}.items():
        c.optim[k] = off
    check_config(c)
