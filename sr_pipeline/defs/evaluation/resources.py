"""``GateSettings``: the promotion gate's tolerances and the device the evaluation runs (and is timed) on,
each from its ``$SR_PIPELINE_GATE_*`` setting through the shared validator."""

import os

import dagster as dg
from pydantic import Field

def _env_float(name: str) -> float:
    """A numeric setting through the shared validator (its default and bounds are stated there)."""
    from sr_pipeline.common.env_settings import ENV_SETTINGS

    return float(ENV_SETTINGS[name]())


def _env_bool(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "no", "off", "")


class GateSettings(dg.ConfigurableResource):
    """Tolerances of the promotion gate and the device the evaluation runs (and is timed) on."""

    psnr_tolerance_db: float = Field(
        default_factory=lambda: _env_float("SR_PIPELINE_GATE_PSNR_TOLERANCE_DB"), ge=0,
        description="how far (dB) the candidate's mean PSNR-Y may fall below the promoted student's; "
        "env SR_PIPELINE_GATE_PSNR_TOLERANCE_DB")
    lpips_tolerance: float = Field(
        default_factory=lambda: _env_float("SR_PIPELINE_GATE_LPIPS_TOLERANCE"), ge=0,
        description="how far the candidate's mean LPIPS may rise above the promoted student's; "
        "env SR_PIPELINE_GATE_LPIPS_TOLERANCE")
    require_lpips: bool = Field(
        default_factory=lambda: _env_bool("SR_PIPELINE_GATE_REQUIRE_LPIPS", "1"),
        description="fail the bicubic check when LPIPS cannot be measured (run `sr-pipeline lpips-weights`); "
        "env SR_PIPELINE_GATE_REQUIRE_LPIPS")
    max_hf_ratio: float = Field(
        default_factory=lambda: _env_float("SR_PIPELINE_GATE_MAX_HF_RATIO"), gt=0,
        description="over-sharpening limit: the median high-frequency (Laplacian) energy of the candidate's "
        "outputs over their HR's on the calibration pairs; env SR_PIPELINE_GATE_MAX_HF_RATIO")
    device: str = Field(
        default_factory=lambda: os.environ.get("SR_PIPELINE_EVAL_DEVICE", "auto"),
        description="auto (CUDA when present), cpu or cuda[:N]; env SR_PIPELINE_EVAL_DEVICE")

    def thresholds(self):
        from sr_pipeline.evaluation.gate import GateThresholds

        return GateThresholds(self.psnr_tolerance_db, self.lpips_tolerance, self.require_lpips, self.max_hf_ratio)
