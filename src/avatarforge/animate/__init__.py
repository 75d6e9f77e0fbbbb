"""Live avatar animation (``avatarforge animate``; see docs/animate.md).

* The network: :class:`ExpressionAnimator` (avatar + expression controls -> the same
  avatar with that expression; ``prepare(avatar)`` once, ``render(state, controls)`` per
  frame) and its :class:`AnimatorDiscriminator` -- :mod:`.model`.
* Training: :class:`AnimatorTrainer` -- :mod:`.trainer` (its loss terms -- :mod:`.losses`),
  :class:`AnimatorConfig` and :func:`build_animator_config` -- :mod:`.config`,
  :func:`load_animator` -- :mod:`.loading`, :func:`train_animator` (one call, a wall-clock
  budget: the quickstart's) -- :mod:`.quick`, on pairs from the procedural renderer
  (:class:`PairCache`, :class:`StreamingPairs` -- :mod:`.pairs`); held-out metrics -- :mod:`.metrics`.
* Real time: :class:`FrameLoop` with critically damped smoothing and
  :class:`AvatarRenderer` -- :mod:`.loop`; drivers (:class:`IdleDriver`,
  :class:`ScriptedDriver`, :class:`AudioDriver`, :class:`MicrophoneDriver`,
  :class:`ManualDriver`, :class:`KeyboardDriver`, :class:`VMCDriver`) -- :mod:`.drivers`; OSC 1.0 -- :mod:`.osc`.
* ONNX: :func:`export_onnx` and :class:`OnnxAnimator` (onnxruntime, same API) -- :mod:`.onnx_export`.
* CLI: :func:`add_animate_arguments`, :func:`animate_main` -- :mod:`.cli`.

Attributes are imported lazily, so ``import avatarforge.animate`` (done by the CLI to build
its parser) does not import torch.
"""

from __future__ import annotations

from avatarforge.lazy import lazy_attributes

__all__ = [
    "CONTROL_NAMES",
    "NEUTRAL_CONTROLS",
    "AnimatorConfig",
    "AnimatorDiscriminator",
    "AnimatorState",
    "AnimatorTrainer",
    "AudioDriver",
    "AvatarRenderer",
    "CriticalSmoother",
    "ExpressionAnimator",
    "FrameLoop",
    "IdleDriver",
    "KeyboardDriver",
    "ManualDriver",
    "MicrophoneDriver",
    "OnnxAnimator",
    "PairCache",
    "ScriptedDriver",
    "StreamingPairs",
    "VMCDriver",
    "add_animate_arguments",
    "animate_main",
    "build_animator_config",
    "evaluate_animator",
    "export_onnx",
    "find_animator_run",
    "load_animator",
    "train_animator",
]

_LAZY = {
    "CONTROL_NAMES": "avatarforge.models.animator",
    "NEUTRAL_CONTROLS": "avatarforge.models.animator",
    "AnimatorDiscriminator": "avatarforge.models.animator",
    "AnimatorState": "avatarforge.models.animator",
    "ExpressionAnimator": "avatarforge.models.animator",
    "PairCache": "avatarforge.animate.pairs",
    "StreamingPairs": "avatarforge.animate.pairs",
    "evaluate_animator": "avatarforge.animate.metrics",
    "AnimatorConfig": "avatarforge.animate.config",
    "build_animator_config": "avatarforge.animate.config",
    "AnimatorTrainer": "avatarforge.animate.trainer",
    "load_animator": "avatarforge.animate.loading",
    "train_animator": "avatarforge.animate.quick",
    "find_animator_run": "avatarforge.animate.quick",
    "AvatarRenderer": "avatarforge.animate.loop",
    "CriticalSmoother": "avatarforge.animate.loop",
    "FrameLoop": "avatarforge.animate.loop",
    "AudioDriver": "avatarforge.animate.drivers",
    "IdleDriver": "avatarforge.animate.drivers",
    "KeyboardDriver": "avatarforge.animate.drivers",
    "ManualDriver": "avatarforge.animate.drivers",
    "MicrophoneDriver": "avatarforge.animate.drivers",
    "ScriptedDriver": "avatarforge.animate.drivers",
    "VMCDriver": "avatarforge.animate.drivers",
    "OnnxAnimator": "avatarforge.animate.onnx_export",
    "export_onnx": "avatarforge.animate.onnx_export",
    "add_animate_arguments": "avatarforge.animate.cli",
    "animate_main": "avatarforge.animate.cli",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
