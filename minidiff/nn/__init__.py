"""Neural-network pieces with hand-written backward passes: layers, denoisers, optimizers, checks."""
from .module import Module, Parameter  # noqa: F401
from .layers import (  # noqa: F401
    ACTIVATIONS, GELU, Conv2d, Downsample, Embedding, GroupNorm, LayerNorm, Linear, ReLU, ResBlock,
    SigmaEmbedding, SiLU, Tanh, Upsample, make_activation,
)
from .models import (  # noqa: F401
    MODELS, MLPDenoiser, NoiseAwareClassifier, UNetDenoiser, build_model, cross_entropy,
)
from .attention import FeedForward, MultiHeadAttention, TransformerBlock  # noqa: F401
from .autoencoder import Autoencoder  # noqa: F401
from .dit import AdaLayerNorm, DiTBlock, DiTDenoiser  # noqa: F401
from .superres import SuperResDenoiser  # noqa: F401
from .reader import GlyphReader  # noqa: F401
from .gradcheck import GradcheckResult, gradcheck  # noqa: F401
from .optim import EMA, SGD, Adam, AdamW, clip_grad_norm, warmup_cosine_lr  # noqa: F401
from .checkpoint import Checkpoint, load, save  # noqa: F401
