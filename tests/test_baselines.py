"""RepNoise and TAR: each loss term's sign and effect, on tiny random models."""

import torch

from tiny_models import stack_collator, tiny_model, token_batch, token_dataset
from tvaccine.methods import METHODS
from tvaccine.methods.repnoise import bounded_ascent, mmd_to_noise
from tvaccine.methods.tar import negative_entropy
from tvaccine.models import add_lora


def make(method, tmp_path, steps=1, **options):
    config_class, trainer_class = METHODS[method]
    args = config_class(output_dir=str(tmp_path / method), max_steps=steps, per_device_train_batch_size=4,
                        disable_tqdm=True, use_cpu=True, seed=0, learning_rate=1e-2, max_grad_norm=1e9,
                        lr_scheduler_type="constant", warmup_steps=0, **options)
    return trainer_class(model=add_lora(tiny_model("llama", layers=3), alpha=4, dropout=0.0), args=args,
                         train_dataset=token_dataset(16), data_collator=stack_collator,
                         harmful_dataset=token_dataset(16, seed=9))


def test_bounded_ascent_falls_as_the_harmful_loss_rises_and_stays_bounded():
    loss = torch.tensor([0.5, 1.0, 3.0, 10.0], requires_grad=True)
    values = bounded_ascent(loss)
    values.sum().backward()
    assert (loss.grad < 0).all()  # minimising the term raises the harmful loss
    assert values[-1].item() < 1e-3 and (values >= 0).all()  # ... and it flattens out instead of diverging


def test_mmd_is_small_for_noise_and_large_for_shifted_samples():
    generator = torch.Generator().manual_seed(0)
    noise_like = torch.randn(200, 16, generator=generator)
    shifted = noise_like + 3.0
    assert mmd_to_noise(noise_like, generator) < 0.05 < mmd_to_noise(shifted, generator)


def test_repnoise_moves_harmful_representations_towards_noise(tmp_path):
    trainer = make("repnoise", tmp_path, steps=8, alpha=0.0, beta=10.0)
    batch = token_batch(4, 12, seed=9)
    model = trainer.model

    def mmd():
        torch.manual_seed(1)
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True)
        return trainer.noise_term(out.hidden_states, batch["attention_mask"]).item()

    trainer._generator.manual_seed(5)
    before = mmd()
    trainer.train()
    trainer._generator.manual_seed(5)
    assert mmd() < before


def test_repnoise_ascent_raises_the_harmful_loss(tmp_path):
    """Against the same run without the ascent term, so that plain training noise cannot pass it."""
    batch = token_batch(16, 12, seed=9)
    after = {}
    for alpha in (0.0, 100.0):  # at the random model's high harmful loss the bounded term is flat
        trainer = make("repnoise", tmp_path / str(alpha), steps=6, alpha=alpha, beta=0.0)
        trainer.train()
        with torch.no_grad():
            after[alpha] = trainer.model(**batch).loss.item()
    assert after[100.0] > after[0.0] + 0.02


def _repeated(dataset_rows, seed):
    """``dataset_rows`` copies of one sample: every batch, of any size, has the same mean loss."""
    from datasets import Dataset

    row = {k: v[0] for k, v in token_dataset(1, seed=seed).to_dict().items()}
    return Dataset.from_list([row] * dataset_rows)


def test_repnoise_terms_do_not_grow_with_gradient_accumulation(tmp_path):
    """One optimizer step of plain SGD from the same weights: 1 micro-batch of 2, or 2 micro-batches
    of 2 whose losses are identical, must give the same update."""
    updates = []
    for accumulation in (1, 2):
        config_class, trainer_class = METHODS["repnoise"]
        args = config_class(output_dir=str(tmp_path / str(accumulation)), max_steps=1, per_device_train_batch_size=2,
                            gradient_accumulation_steps=accumulation, disable_tqdm=True, use_cpu=True, seed=0,
                            learning_rate=1e-2, max_grad_norm=1e9, optim="sgd", weight_decay=0.0,
                            alpha=1.0, beta=0.0, warmup_steps=0, lr_scheduler_type="constant")
        model = add_lora(tiny_model("llama", layers=3), dropout=0.0)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.1, generator=torch.Generator().manual_seed(len(name)))
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        trainer = trainer_class(model=model, args=args, train_dataset=_repeated(8, seed=0),
                                data_collator=stack_collator, harmful_dataset=_repeated(8, seed=9))
        trainer.train()
        updates.append({n: p.detach() - before[n] for n, p in trainer.model.named_parameters() if n in before})
    for name, update in updates[0].items():
        torch.testing.assert_close(updates[1][name], update, rtol=1e-4, atol=1e-7)


def test_tar_inner_attack_leaves_the_outer_model_untouched(tmp_path):
    trainer = make("tar", tmp_path, inner_steps=3, inner_lr_min=0.5, inner_lr_max=0.5)
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads, _ = trainer.tamper_resistance_gradients(model)
    assert any(g.abs().sum() > 0 for g in grads)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
        assert param.grad is None


def test_tar_gradient_lowers_the_tamper_resistance_loss_at_the_attacked_weights():
    logits = torch.randn(2, 6, 11, requires_grad=True)
    labels = torch.randint(0, 11, (2, 6))
    labels[:, :2] = -100
    loss = negative_entropy(logits, labels)
    assert -1 <= loss.item() <= 0
    loss.backward()
    stepped = negative_entropy(logits.detach() - 0.5 * logits.grad, labels)
    assert stepped < loss  # descending makes the attacked model less sure of harmful continuations
    uniform = negative_entropy(torch.zeros(1, 4, 11), torch.ones(1, 4, dtype=torch.long))
    assert abs(uniform.item() + 1) < 1e-6


def test_both_baselines_train_and_log_their_terms(tmp_path):
    for method in ("repnoise", "tar"):
        trainer = make(method, tmp_path, steps=2)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
        trainer.train()
        assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if "lora_" in n)
        logged = {k for entry in trainer.state.log_history for k in entry}
        assert ({"harmful_loss", "mmd_to_noise"} if method == "repnoise" else {"tamper_loss"}) <= logged
