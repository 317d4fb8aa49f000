"""Cluster plans: whole models on Trainium systems (training step time, tokens/s, MFU, memory per core,
dollars; inference TTFT/TPOT), composed from simulated per-rank layer shards and the collective model.

    from trnlab.plan import plan_training, plan_inference, search
"""
from trnlab.plan.configs import MODELS, ModelSpec, get_model, model_names
from trnlab.plan.infer import InferencePlan, plan_inference
from trnlab.plan.train import Layout, TrainPlan, plan_training

__all__ = ["MODELS", "ModelSpec", "get_model", "model_names", "plan_training", "plan_inference", "TrainPlan",
           "InferencePlan", "Layout"]
