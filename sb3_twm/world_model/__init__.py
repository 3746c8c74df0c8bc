"""TWM's world model: observation model (encoder/decoder), Transformer-XL dynamics model, losses and imagination."""

from sb3_twm.world_model.dynamics_model import DynamicsMemory, DynamicsModel, DynamicsPrediction
from sb3_twm.world_model.imagination import ImaginedTrajectories, imagine
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
from sb3_twm.world_model.world_model import WorldModelBatch, WorldModel, WorldModelOutput

__all__ = [
    "CnnDecoder",
    "CnnEncoder",
    "Decoder",
    "DynamicsMemory",
    "DynamicsModel",
    "DynamicsPrediction",
    "Encoder",
    "ImaginedTrajectories",
    "MlpDecoder",
    "MlpEncoder",
    "ObservationModel",
    "WorldModelBatch",
    "TransformerXL",
    "WorldModel",
    "WorldModelOutput",
    "imagine",
    "make_decoder",
    "make_encoder",
]
