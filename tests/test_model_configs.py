"""Model settings: one definition per shared setting, and old saved settings still load.

``SAVED`` is each family's ``config.json`` "model" block as Studio wrote it before the shared
settings moved to ``studio.models.configs`` (every default, in form order). A change of a
default, a name or the order of the fields shows up here as well as in ``docs/models.md``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from studio.models.configs import learning_rate, network_width, override
from studio.models.registry import FAMILIES, get_family
from studio.models.vae.conv import ConvVAEConfig

# fmt: off
SAVED = {
    'gan.dcgan': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'latent_dim': 100, 'width': 64, 'lr_g': 0.0002, 'lr_d': 0.0002, 'beta1': 0.5, 'beta2': 0.999, 'spectral_norm': False, 'r1_gamma': 0.0},
    'gan.cgan': {'resolution': 32, 'channels': 3, 'num_classes': 2, 'latent_dim': 100, 'width': 64, 'lr_g': 0.0002, 'lr_d': 0.0002, 'beta1': 0.5, 'beta2': 0.999, 'spectral_norm': False, 'r1_gamma': 0.0},
    'gan.wgan_gp': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'latent_dim': 100, 'width': 64, 'lr_g': 0.0001, 'lr_d': 0.0001, 'beta1': 0.0, 'beta2': 0.9, 'spectral_norm': False, 'gp_lambda': 10.0, 'n_critic': 5, 'critic_norm': 'layer', 'drift': 0.001},
    'gan.stylegan': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'latent_dim': 128, 'width': 32, 'lr_g': 0.002, 'lr_d': 0.002, 'beta1': 0.0, 'beta2': 0.99, 'spectral_norm': False, 'augment': 'auto', 'augment_p': 1.0, 'ada_target': 0.6, 'ada_kimg': 100, 'w_dim': 128, 'mapping_layers': 4, 'r1_gamma': 1.0, 'r1_every': 16, 'style_mixing': 0.9, 'ema_kimg': 10.0, 'conditional': False},
    'hybrid.vaegan': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'latent_dim': 64, 'width': 32, 'lr_g': 0.0002, 'lr_d': 0.0002, 'beta1': 0.5, 'beta2': 0.999, 'spectral_norm': False, 'augment': 'auto', 'augment_p': 1.0, 'ada_target': 0.6, 'ada_kimg': 100, 'gamma': 1.0, 'kl_weight': 1.0, 'pixel_weight': 0.0, 'conditional': False},
    'vae.conv': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'latent_dim': 32, 'width': 32, 'lr': 0.001, 'likelihood': 'gaussian', 'learn_sigma': True, 'sigma': 0.1, 'beta': 1.0, 'kl_warmup_steps': 0},
    'vae.beta': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'latent_dim': 32, 'width': 32, 'lr': 0.001, 'likelihood': 'gaussian', 'learn_sigma': False, 'sigma': 0.1, 'beta': 4.0, 'kl_warmup_steps': 2000},
    'vae.cvae': {'resolution': 32, 'channels': 3, 'num_classes': 2, 'latent_dim': 32, 'width': 32, 'lr': 0.001, 'likelihood': 'gaussian', 'learn_sigma': True, 'sigma': 0.1, 'beta': 1.0, 'kl_warmup_steps': 0},
    'vae.vqvae': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'codebook_size': 256, 'embedding_dim': 32, 'downsample': 4, 'width': 64, 'lr': 0.0005, 'commitment': 0.25, 'decay': 0.99, 'restart_after': 100},
    'vae.hierarchical': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'levels': 3, 'latent_channels': 8, 'width': 32, 'cells': 1, 'lr': 0.001, 'likelihood': 'gaussian', 'learn_sigma': True, 'sigma': 0.1, 'kl_warmup_steps': 2000, 'kl_balance': True},
    'ae.kl': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'latent_channels': 4, 'downsample': 4, 'width': 32, 'layers_per_block': 1, 'lr': 0.0005, 'mse_weight': 0.0, 'kl_weight': 1e-06, 'disc_weight': 0.0, 'disc_start': 2000, 'perceptual_weight': 0.0},
    'flow.nice': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'lr': 0.001, 'warmup_steps': 200, 'max_grad_norm': 50.0, 'couplings': 8, 'hidden': 64},
    'flow.realnvp': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'lr': 0.001, 'warmup_steps': 200, 'max_grad_norm': 50.0, 'scales': 3, 'couplings': 3, 'hidden': 64, 'learned_prior': False},
    'flow.glow': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'lr': 0.001, 'warmup_steps': 200, 'max_grad_norm': 50.0, 'levels': 3, 'steps': 8, 'hidden': 128, 'learned_prior': True},
    # Flow++'s width default went from 64 to 32 (issue 19: a step at 64 cost ~8 s on one CPU thread)
    'flow.flowpp': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'lr': 0.001, 'warmup_steps': 200, 'max_grad_norm': 50.0, 'scales': 3, 'couplings': 2, 'hidden': 32, 'blocks': 2, 'components': 8, 'heads': 4, 'attention_res': 16, 'dequant_couplings': 2, 'learned_prior': False},
    'diffusion.ddpm': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'width': 64, 'channel_mults': 'auto', 'layers_per_block': 2, 'attention_res': 16, 'dropout': 0.1, 'num_train_timesteps': 1000, 'beta_schedule': 'linear', 'prediction_type': 'epsilon', 'lr': 0.0002, 'weight_decay': 0.0, 'warmup_steps': 200, 'grad_clip': 1.0, 'ema_decay': 0.999, 'cond_drop_prob': 0.1, 'guidance': 3.0},
    'diffusion.text': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'width': 32, 'channel_mults': 'auto', 'layers_per_block': 1, 'attention_res': 16, 'dropout': 0.0, 'num_train_timesteps': 1000, 'beta_schedule': 'linear', 'prediction_type': 'v_prediction', 'lr': 0.0002, 'weight_decay': 0.0, 'warmup_steps': 200, 'grad_clip': 1.0, 'ema_decay': 0.999, 'cond_drop_prob': 0.1, 'guidance': 3.0, 'word_dropout': 0.1, 'text_dim': 64, 'text_layers': 2, 'text_heads': 4, 'max_tokens': 24, 'max_words': 2000, 'vocab': '', 'sample_prompts': '', 'text_encoder_path': ''},
    'i2i.pix2pix': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'width': 64, 'lr_g': 0.0002, 'lr_d': 0.0002, 'beta1': 0.5, 'beta2': 0.999, 'l1_weight': 100.0, 'gan_loss': 'vanilla', 'norm': 'batch', 'dropout': 0.5, 'd_layers': 3, 'jitter': True},
    'i2i.cyclegan': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'width': 64, 'blocks': 6, 'lr_g': 0.0002, 'lr_d': 0.0002, 'beta1': 0.5, 'beta2': 0.999, 'cycle_weight': 10.0, 'identity_weight': 5.0, 'pool_size': 50, 'lr_decay': True, 'd_layers': 3, 'dropout': 0.0},
    'i2i.superres': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'scale': 2, 'blur': 0.6, 'input_noise': 0.02, 'width': 64, 'layers_per_block': 2, 'attention_res': 0, 'dropout': 0.0, 'num_train_timesteps': 1000, 'beta_schedule': 'linear', 'prediction_type': 'epsilon', 'lr': 0.0001, 'weight_decay': 0.0, 'warmup_steps': 200, 'grad_clip': 1.0, 'ema_decay': 0.999},
    'ar.pixelcnn': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'width': 64, 'layers': 8, 'kernel': 3, 'mixtures': 5, 'class_conditional': True, 'lr': 0.001, 'warmup_steps': 100, 'max_grad_norm': 10.0},
    'ar.vq_prior': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'base_run': '', 'architecture': 'pixelcnn', 'width': 64, 'layers': 6, 'kernel': 3, 'heads': 4, 'dropout': 0.0, 'class_conditional': True, 'lr': 0.0005, 'warmup_steps': 100, 'max_grad_norm': 1.0},
    # issue 20: latent diffusion (added with the DiT settings)
    'diffusion.latent': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'width': 64, 'channel_mults': 'auto', 'layers_per_block': 2, 'attention_res': 16, 'backbone': 'unet', 'dit_size': 'S', 'patch_size': 4, 'dit_layers': 0, 'dit_width': 0, 'dropout': 0.1, 'num_train_timesteps': 1000, 'beta_schedule': 'linear', 'prediction_type': 'epsilon', 'lr': 0.0002, 'weight_decay': 0.0, 'warmup_steps': 200, 'grad_clip': 1.0, 'ema_decay': 0.999, 'cond_drop_prob': 0.1, 'guidance': 3.0, 'autoencoder': '', 'scaling_factor': 0.0},
    'diffusion.latent_text': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'width': 32, 'channel_mults': 'auto', 'layers_per_block': 1, 'attention_res': 16, 'backbone': 'unet', 'dit_size': 'S', 'patch_size': 4, 'dit_layers': 0, 'dit_width': 0, 'dropout': 0.0, 'num_train_timesteps': 1000, 'beta_schedule': 'linear', 'prediction_type': 'v_prediction', 'lr': 0.0002, 'weight_decay': 0.0, 'warmup_steps': 200, 'grad_clip': 1.0, 'ema_decay': 0.999, 'cond_drop_prob': 0.1, 'guidance': 3.0, 'word_dropout': 0.1, 'text_dim': 64, 'text_layers': 2, 'text_heads': 4, 'max_tokens': 24, 'max_words': 2000, 'vocab': '', 'sample_prompts': '', 'text_encoder_path': '', 'autoencoder': '', 'scaling_factor': 0.0},
    # the RBM's rate went from 0.001 (Adam) to 0.01 (SGD with momentum; issue 19)
    'ebm.rbm': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'hidden': 256, 'training': 'cd', 'cd_steps': 1, 'max_side': 32, 'threshold': 0.5, 'lr': 0.01, 'weight_decay': 0.0001},
    'style.fast': {'resolution': 32, 'channels': 3, 'num_classes': 0, 'style_image': '', 'vgg_weights': '', 'content_weight': 1.0, 'style_weight': 100000.0, 'tv_weight': 1.0, 'style_scale': 1.0, 'width': 32, 'residual_blocks': 5, 'lr': 0.001},
}
# Settings added after the configs above were saved (issue 17: the GANs' augmentation), with
# their defaults: an old config loads with these.
_AUGMENT = {'augment': 'auto', 'augment_p': 1.0, 'ada_target': 0.6, 'ada_kimg': 100}
# (issue 17: progressive growing)
_GROWING = {'progressive': False, 'grow_steps': 250}
# (issue 20: the diffusion transformer backbone; an old config is a UNet)
_DIT = {'backbone': 'unet', 'dit_size': 'S', 'patch_size': 4, 'dit_layers': 0, 'dit_width': 0}
ADDED = {
    'gan.dcgan': {**_AUGMENT, **_GROWING}, 'gan.cgan': {**_AUGMENT, **_GROWING},
    'gan.wgan_gp': {**_AUGMENT, **_GROWING}, 'gan.stylegan': _GROWING,
    'diffusion.ddpm': _DIT, 'diffusion.text': _DIT,
    # (issue 18: super-resolution learns the residual over bicubic; an old config does not)
    'i2i.superres': {'residual': False, 'residual_scale': 2.0, **_DIT},  # + its DiT backbone
}
# Defaults changed on purpose since: a new run gets these, an old config keeps its saved
# values (and a setting it lacks loads as its ``legacy_defaults`` value, as ADDED shows).
MOVED = {'i2i.superres': {'prediction_type': 'sample', 'residual': True}}
# fmt: on


def test_every_family_has_a_saved_config():
    assert set(SAVED) == set(FAMILIES)


@pytest.mark.parametrize("key", list(FAMILIES))
def test_config_saved_before_the_refactor_loads_to_the_same_values(key):
    config_cls = get_family(key).Config
    saved = json.loads(json.dumps(SAVED[key]))  # as read back from config.json
    config = config_cls.from_saved(saved)
    added = ADDED.get(key, {})
    assert config.to_dict() == {**SAVED[key], **added}
    kept = [name for name in config.to_dict() if name not in added]
    assert kept == list(SAVED[key])  # same fields, same (form) order
    # The saved values were the defaults: none of them moved but those MOVED names.
    moved = dataclasses.replace(config, **MOVED.get(key, {}))
    assert moved == config_cls(num_classes=SAVED[key]["num_classes"])


def test_a_changed_setting_survives_the_round_trip():
    saved = dict(SAVED["diffusion.text"], **ADDED["diffusion.text"], width=16)
    saved.update(cond_drop_prob=0.25, vocab="red blue")
    config = get_family("diffusion.text").Config.from_dict(saved)
    assert (config.width, config.cond_drop_prob, config.vocabulary()) == (16, 0.25, ["red", "blue"])
    assert config.to_dict() == saved


def _meta(config_cls: type, name: str) -> dict:
    field = {f.name: f for f in dataclasses.fields(config_cls)}[name]
    return dict(field.metadata)


def test_override_changes_the_default_and_keeps_the_rest():
    @dataclasses.dataclass
    class Sharper(ConvVAEConfig):
        beta: float = override(ConvVAEConfig, "beta", 2.0, main=True)

    assert Sharper().beta == 2.0 and ConvVAEConfig().beta == 1.0
    assert _meta(Sharper, "beta") == {**_meta(ConvVAEConfig, "beta"), "main": True}
    # A redefined field keeps its place in the form.
    assert [f.name for f in dataclasses.fields(Sharper)] == [
        f.name for f in dataclasses.fields(ConvVAEConfig)
    ]


def test_override_refuses_unknown_settings_and_metadata():
    with pytest.raises(AttributeError, match="no setting 'bogus'"):
        override(ConvVAEConfig, "bogus", 1)
    with pytest.raises(TypeError, match="cannot change colour"):
        override(ConvVAEConfig, "beta", 1.0, colour="red")


def _fields_labelled(label: str) -> list[tuple[str, dataclasses.Field]]:
    return [
        (key, f)
        for key in FAMILIES
        for f in dataclasses.fields(get_family(key).Config)
        if f.metadata.get("label") == label
    ]


@pytest.mark.parametrize(
    ("label", "shared"),
    [
        ("Learning rate", learning_rate(1.0)),
        ("Network width", network_width(8, help="")),
    ],
)
def test_shared_settings_have_one_range_everywhere(label, shared):
    fields = _fields_labelled(label)
    assert len({key for key, _ in fields}) >= 6, "expected the setting in most families"
    for key, f in fields:
        assert f.metadata["minimum"] == shared.metadata["minimum"], (key, f.name)
        if label == "Learning rate":
            assert f.metadata["maximum"] == shared.metadata["maximum"], (key, f.name)
