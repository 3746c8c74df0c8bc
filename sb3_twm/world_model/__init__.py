"""TWM's world model: observation model (encoder/decoder), Transformer-XL dynamics model, losses and imagination."""

from sb3_twm.common.type_aliases import ImaginationStart, ImaginedTrajectories, WorldModelBatch, WorldModelOutput
from sb3_twm.world_model.dreams import Dream, dream
from sb3_twm.world_model.dynamics_model import DynamicsMemory, DynamicsModel, DynamicsPrediction
from sb3_twm.world_model.imagination import imagine, select_starts
from sb3_twm.world_model.observation_model import (
    CnnDecoder,
    CnnEncoder,
    Decoder,
    Encoder,
    MlpDecoder,
    MlpEncoder,
    ObservationModel,
    make_decoder,
    make_encoder,
)
from sb3_twm.world_model.transformer_xl import TransformerXL
from sb3_twm.world_model.world_model import WorldModel, world_model_defaults, world_model_keys

__all__ = [
    "CnnDecoder",
    "CnnEncoder",
    "Decoder",
    "Dream",
    "DynamicsMemory",
    "DynamicsModel",
    "DynamicsPrediction",
    "Encoder",
    "ImaginationStart",
    "ImaginedTrajectories",
    "MlpDecoder",
    "MlpEncoder",
    "ObservationModel",
    "TransformerXL",
    "WorldModel",
    "WorldModelBatch",
    "WorldModelOutput",
    "dream",
    "imagine",
    "make_decoder",
    "make_encoder",
    "select_starts",
    "world_model_defaults",
    "world_model_keys",
]
