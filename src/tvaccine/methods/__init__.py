"""Alignment methods, registered by name: each is a (config dataclass, Trainer subclass) pair."""

from tvaccine.methods.repnoise import RepNoiseConfig, RepNoiseTrainer
from tvaccine.methods.sft import SFTConfig, SFTTrainer
from tvaccine.methods.tar import TARConfig, TARTrainer
from tvaccine.methods.tvaccine import TVaccineConfig, TVaccineTrainer
from tvaccine.methods.vaccine import VaccineConfig, VaccineTrainer

METHODS = {
    "sft": (SFTConfig, SFTTrainer),
    "vaccine": (VaccineConfig, VaccineTrainer),
    "t-vaccine": (TVaccineConfig, TVaccineTrainer),
    "repnoise": (RepNoiseConfig, RepNoiseTrainer),
    "tar": (TARConfig, TARTrainer),
}
