"""Activation checkpointing (``model.checkpoint_activations``) and offloading
(``model.offload_activations``): the same losses and gradients, fewer saved activations."""
from typing import Dict, List, Tuple

import torch

from conftest import train_losses

DROPOUTS = ["model.dropout=0.1", "model.attention_dropout=0.1", "model.activation_dropout=0.1"]


def tiny_trainers(data_bin: str, variants: Dict[str, Dict[str, bool]]) -> Dict[str, object]:
    """One Trainer per variant (model fields set on top of a 2-layer transformer_lm with dropout
    everywhere), all on one task and each model built from seed 3."""
    from omegaconf import OmegaConf

    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config
    from fairseq.trainer import Trainer

    base = compose_config([
        f"task.data={data_bin}", "task.tokens_per_sample=32", "dataset.max_tokens=256",
        "model.decoder_layers=2", "model.decoder_embed_dim=32", "model.decoder_input_dim=32",
        "model.decoder_output_dim=32", "model.decoder_ffn_embed_dim=64", "model.decoder_attention_heads=2",
        "optimizer=adam", "optimization.lr=[0.003]", "common.cpu=true",
    ] + DROPOUTS)
    task = tasks.setup_task(base.task)
    task.load_dataset("train")
    trainers = {}
    for name, fields in variants.items():
        cfg = base.copy()
        OmegaConf.set_struct(cfg, False)
        for key, value in fields.items():
            cfg.model[key] = value
        torch.manual_seed(3)
        model = task.build_model(cfg.model)
        trainers[name] = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    return trainers


def first_batches(trainer, n: int) -> List[dict]:
    itr = trainer.task.get_batch_iterator(trainer.task.dataset("train"), max_tokens=256,
                                          max_positions=32, seed=1).next_epoch_itr(shuffle=False)
    return [next(itr) for _ in range(n)]


def run_updates(trainer, batches) -> Tuple[List[float], List[Dict[str, torch.Tensor]]]:
    """Per-update losses and the gradients each update applied (recorded at optimizer.step)."""
    grads: List[Dict[str, torch.Tensor]] = []
    params = dict(trainer.unwrapped_model.named_parameters())
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads.append({name: p.grad.clone() for name, p in params.items() if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    torch.manual_seed(11)  # the dropout masks' stream, the same for every variant
    losses = []
    for batch in batches:
        out = trainer.train_step([batch])
        losses.append(float(sum(log["loss"] for log in out["logging_outputs"])))
    return losses, grads


def test_losses_and_gradients_equal_with_checkpointing_and_offloading(data_bin):
    trainers = tiny_trainers(data_bin, {"plain": {}, "checkpoint": {"checkpoint_activations": True},
                                        "offload": {"offload_activations": True}})
    batches = first_batches(trainers["plain"], 3)
    results = {}
    for name, trainer in trainers.items():
        assert trainer.unwrapped_model.decoder.checkpoint_activations == (name != "plain")
        results[name] = run_updates(trainer, batches)
    plain_losses, plain_grads = results["plain"]
    assert len(plain_grads) == 3 and len(plain_grads[0]) > 10
    for name in ("checkpoint", "offload"):
        losses, grads = results[name]
        assert torch.allclose(torch.tensor(losses), torch.tensor(plain_losses), rtol=1e-6, atol=1e-6), name
        for update, (ours, ref) in enumerate(zip(grads, plain_grads)):
            assert ours.keys() == ref.keys()
            for key in ref:
                assert torch.allclose(ours[key], ref[key], rtol=1e-5, atol=1e-7), (name, update, key)
    # dropout really is on: the same batch twice gives different losses
    trainer = trainers["plain"]
    trainer.model.train()
    first, second = (trainer.task.train_step(batches[0], trainer.model, trainer.criterion)[0].item()
                     for _ in range(2))
    assert first != second


def saved_tensor_bytes(model, tokens: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for backward during one forward."""
    seen: Dict[Tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens)[0].sum().backward()
    return sum(seen.values())


def test_checkpointing_keeps_fewer_activations_and_only_while_training():
    from test_transformer_lm import build, random_tokens

    tokens = random_tokens(4, 24)
    torch.manual_seed(0)
    plain = build(decoder_layers=3, dropout=0.1).train()
    torch.manual_seed(0)
    checkpointed = build(decoder_layers=3, dropout=0.1, checkpoint_activations=True).train()
    # each checkpointed block keeps only its (B, T, C) input, not its attention and FFN insides
    assert saved_tensor_bytes(checkpointed, tokens) < 0.6 * saved_tensor_bytes(plain, tokens)
    # evaluation (no gradients) runs the blocks directly, with the same results
    checkpointed.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(checkpointed(tokens)[0], plain(tokens)[0])


def test_offload_implies_checkpointing_and_only_offloads_from_an_accelerator():
    from test_transformer_lm import build

    decoder = build(offload_activations=True).decoder
    assert decoder.checkpoint_activations and decoder.offload_activations
    # on the CPU the saved inputs already are in CPU memory: no copy
    assert not isinstance(decoder._offload_context(torch.zeros(1)), torch.autograd.graph.save_on_cpu)
    # a tensor elsewhere (here the meta device stands for a GPU) is saved through save_on_cpu
    assert isinstance(decoder._offload_context(torch.zeros(1, device="meta")), torch.autograd.graph.save_on_cpu)
    assert not build(checkpoint_activations=True).decoder.offload_activations


def test_legacy_flags_train_with_the_same_losses(data_bin, tmp_path):
    from test_train import tiny_args, train

    logs = {}
    for name, flags in {"plain": [], "offload": ["--checkpoint-activations", "--offload-activations"]}.items():
        logs[name] = str(tmp_path / f"{name}.log")
        train(tiny_args(data_bin, str(tmp_path / name), logs[name], 3, ["--dropout", "0.1", "--cpu"] + flags))
    saved = torch.load(tmp_path / "offload" / "checkpoint_last.pt", weights_only=True)["cfg"]["model"]
    assert saved["checkpoint_activations"] is True and saved["offload_activations"] is True
    losses = {name: train_losses(path) for name, path in logs.items()}
    assert len(losses["plain"]) == 3
    assert losses["offload"] == losses["plain"]
