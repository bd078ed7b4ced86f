"""Neural-network pieces with hand-written backward passes: layers, denoisers, optimizers, checks."""
from .module import Module, Parameter  # noqa: F401
from .layers import (  # noqa: F401
    ACTIVATIONS, GELU, Conv2d, Downsample, Embedding, GroupNorm, LayerNorm, Linear, ReLU, ResBlock,
    SigmaEmbedding, SiLU, Tanh, Upsample, make_activation,
)
from .models import (  # noqa: F401
    MODELS, MLPDenoiser, NoiseAwareClassifier, UNetDenoiser, build_model, cross_entropy,
)
from .gradcheck import GradcheckResult, gradcheck  # noqa: F401
