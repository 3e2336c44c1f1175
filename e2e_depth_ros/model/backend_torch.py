"""The torch backend: a diffusers checkpoint's three stages as torch modules (docs/backends.md).

The same stage modules are what ``e2e-depth export`` traces to ONNX, so the exported graphs
and the torch backend compute exactly the same thing.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from e2e_depth_ros.errors import CheckpointError
from e2e_depth_ros.model.subpixel import use_subpixel_upsampling

_SUBFOLDERS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
# x0 from a model output when the noisy latent z_t is zero (docs/inference.md step 7), per
# prediction type: v: x0 = sqrt(abar) z - sqrt(1 - abar) v;
# epsilon: x0 = (z - sqrt(1 - abar) e) / sqrt(abar)
X0_COEFFICIENT = {
    "v_prediction": lambda abar: -math.sqrt(1.0 - abar),
    "epsilon": lambda abar: -math.sqrt(1.0 - abar) / math.sqrt(abar),
    "sample": lambda abar: 1.0,
}


class EncoderStage(torch.nn.Module):
    """Stage 1: image [N, 3, h, w] in [-1, 1] -> posterior mean [N, 4, h/8, w/8], unscaled."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv
        self.latent_channels = int(vae.config.latent_channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        moments = self.encoder(image)  # [N, 2C, h/8, w/8]: mean and log-variance
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return moments[:, : self.latent_channels]  # the mean, never a sample


class UNetStage(torch.nn.Module):
    """Stage 2: image latent [N, 4, h/8, w/8] -> UNet output (v) at t = 999 on [latent, 0]."""

    def __init__(self, unet: torch.nn.Module, text_embedding: torch.Tensor,
                 timestep: int) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("text_embedding", text_embedding)  # [1, 2, C]: BOS + EOS
        self.register_buffer("timestep", torch.tensor(timestep, dtype=torch.long))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        sample = torch.cat([latent, torch.zeros_like(latent)], dim=1)  # [N, 8, h/8, w/8]
        text = self.text_embedding.expand(latent.shape[0], -1, -1)  # [N, 2, C]
        return self.unet(sample, self.timestep, encoder_hidden_states=text,
                         return_dict=False)[0]


class DecoderStage(torch.nn.Module):
    """Stage 3: latent z = x0 / scaling_factor [N, 4, h/8, w/8] -> image [N, 3, h, w]."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        use_subpixel_upsampling(vae.decoder)  # the same values with 4/9 of those convs' work
        self.decoder = vae.decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            latent = self.post_quant_conv(latent)
        return self.decoder(latent)


@dataclass
class LoadedModel:
    """A diffusers checkpoint reduced to what inference needs (text encoder dropped)."""

    source: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_embedding: torch.Tensor  # [1, 2, C]: the empty prompt, BOS + EOS, no padding
    timestep: int  # T - 1
    prediction_type: str
    x0_coefficient: float
    scaling_factor: float


def is_local_reference(model: str) -> bool:
    """A model argument that names a folder rather than a hub id ``owner/name``."""
    if os.path.isdir(model):
        return True
    return model.startswith(("/", ".", "~")) or model.count("/") != 1 or model.endswith("/")


def checkpoint_source(model: str) -> tuple[str, bool]:
    """Return (where to load from, is_local) and check a local folder's layout first."""
    if not isinstance(model, str) or not model.strip():
        raise CheckpointError(f"model must be a hub id or a folder, got {model!r}")
    if not is_local_reference(model):
        return model, False
    path = Path(model).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not (path / "model_index.json").is_file():
        raise CheckpointError(f"{path}: no model_index.json (not a diffusers checkpoint folder)")
    for sub in _SUBFOLDERS:
        if not (path / sub).is_dir():
            raise CheckpointError(f"{path}: missing the {sub}/ folder of a diffusers checkpoint")
    return str(path), True


def _load_component(loader, source: str, subfolder: str, is_local: bool, **kwargs):
    try:
        return loader.from_pretrained(
            source, subfolder=subfolder, local_files_only=is_local, **kwargs
        )
    except Exception as err:  # noqa: BLE001 - every loader failure becomes one clear error
        if is_local:
            raise CheckpointError(f"{source}/{subfolder}: cannot be loaded ({err})") from err
        raise CheckpointError(
            f"could not load {source!r} from the Hugging Face Hub ({type(err).__name__}); "
            "pass a local checkpoint folder instead, or make a random-weight test one with "
            "`e2e-depth tiny-checkpoint DIR`"
        ) from err


def load_checkpoint(model: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a diffusers E2E-FT checkpoint on the CPU: UNet, VAE and the step's constants."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source, is_local = checkpoint_source(model)
    kwargs = {"torch_dtype": dtype}
    unet = _load_component(UNet2DConditionModel, source, "unet", is_local, **kwargs)
    if unet.config.in_channels != 8:
        raise CheckpointError(
            f"{source}: the UNet takes {unet.config.in_channels} input channels, an E2E-FT "
            "checkpoint takes 8 (image latent + prediction latent)"
        )
    vae = _load_component(AutoencoderKL, source, "vae", is_local, **kwargs)
    scheduler = _load_component(DDIMScheduler, source, "scheduler", is_local)
    tokenizer = _load_component(CLIPTokenizer, source, "tokenizer", is_local)
    text_encoder = _load_component(CLIPTextModel, source, "text_encoder", is_local)
    prediction_type = scheduler.config.prediction_type
    if prediction_type not in X0_COEFFICIENT:
        raise CheckpointError(f"{source}: unsupported prediction_type {prediction_type!r}")

    # Step 4: the empty prompt without padding (BOS, EOS), computed once; the text encoder
    # is then dropped, it is never needed again.
    with torch.inference_mode():
        ids = tokenizer("", padding="do_not_pad", return_tensors="pt").input_ids  # [1, 2]
        embedding = text_encoder(ids)[0]  # [1, 2, C]
    del text_encoder

    # Step 6: t = T - 1 = 999 with the scheduler's own alphas_cumprod.
    last = scheduler.config.num_train_timesteps - 1
    abar = float(scheduler.alphas_cumprod[last])
    unet.eval().requires_grad_(False)
    vae.eval().requires_grad_(False)
    return LoadedModel(
        source=source,
        unet=unet,
        vae=vae,
        text_embedding=embedding.to(dtype).clone(),
        timestep=last,
        prediction_type=prediction_type,
        x0_coefficient=X0_COEFFICIENT[prediction_type](abar),
        scaling_factor=float(vae.config.scaling_factor),
    )


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of a module's weights: equal digests mean the same VAE (shared encode)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class TorchStages:
    """One model's stages as torch modules on one device (a ``StageRunner``).

    ``channels_last`` runs the convolutions in NHWC on purpose (faster with fp16 on CUDA);
    otherwise every tensor stays contiguous NCHW, so results do not depend on the layout.
    """

    def __init__(self, name: str, loaded: LoadedModel, device: torch.device,
                 dtype: torch.dtype, *, channels_last: bool = False) -> None:
        self.name = name
        self.loaded = loaded
        self.device = device
        self.dtype = dtype
        self.channels_last = channels_last
        self.cuda_graphs = False
        self.scaling_factor = loaded.scaling_factor
        self.x0_coefficient = loaded.x0_coefficient
        self.batch_decode = device.type == "cuda"
        loaded.unet.to(device)
        self._build()

    # The diffusers modules, for callers and tests that inspect them.
    @property
    def unet(self) -> torch.nn.Module:
        return self.loaded.unet

    @property
    def vae(self) -> torch.nn.Module:
        return self.loaded.vae

    @property
    def vae_key(self) -> int:
        return id(self.loaded.vae)

    def share_vae(self, other: "TorchStages") -> None:
        """Use ``other``'s VAE (same weights): one encode per image, one copy in memory."""
        self.loaded.vae = other.loaded.vae
        self._build()

    def _build(self) -> None:
        self.loaded.vae.to(self.device)
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        self.encoder_stage = EncoderStage(self.loaded.vae).to(memory_format=memory)
        self.unet_stage = UNetStage(self.loaded.unet,
                                    self.loaded.text_embedding.to(self.device, self.dtype),
                                    self.loaded.timestep).to(self.device)
        self.unet_stage.to(memory_format=memory)
        self.decoder_stage = DecoderStage(self.loaded.vae).to(memory_format=memory)

    def compile(self, *, cuda_graphs: bool = False) -> None:
        """torch.compile each stage with static shapes; compilation happens at warm-up."""
        self.cuda_graphs = cuda_graphs
        mode = "reduce-overhead" if cuda_graphs else None
        for attr in ("encoder_stage", "unet_stage", "decoder_stage"):
            setattr(self, attr, torch.compile(getattr(self, attr), mode=mode, dynamic=False))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        # clone: a CUDA graph's output buffer is overwritten by its next replay
        return y.float().contiguous().clone() if self.cuda_graphs else y.float().contiguous()

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self._output(self.encoder_stage(self._input(image)))

    def denoise(self, latent: torch.Tensor) -> torch.Tensor:
        return self._output(self.unet_stage(self._input(latent)))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self._output(self.decoder_stage(self._input(latent)))
