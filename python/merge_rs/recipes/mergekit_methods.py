"""Each mergekit method as a merge-rs method: mergekit's parameters (shared ones, and per-model ones that
fall back to the shared settings, then to mergekit's defaults) evaluated for one tensor and renamed."""

from __future__ import annotations

from typing import Any

from .settings import evaluate
from .source import RecipeSource

# mergekit method → (sparsification, consensus, normalize, rescale) of generalized task arithmetic.
GTA = {
    "task_arithmetic": ("none", "none", False, False),
    "ties": ("magnitude", "sum", True, False),
    "dare_ties": ("random", "sum", False, True),
    "dare_linear": ("random", "none", False, True),
    "breadcrumbs": ("magnitude_outliers", "none", False, False),
    "breadcrumbs_ties": ("magnitude_outliers", "sum", False, False),
    "della": ("della_magprune", "sum", True, True),
    "della_linear": ("della_magprune", "none", False, True),
}
REQUIRED = object()


DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "bfloat16": "bfloat16",
          "bf16": "bfloat16"}


class Translator:
    """mergekit's parameter specs for one method, and their values for a tensor."""

    method = ""
    shared_specs: dict[str, Any] = {}
    model_specs: dict[str, Any] = {}
    # mergekit's result is merge-rs's float32 result rounded once to the config's dtype: mergekit computes the
    # method in float32 whatever the dtype (slerp), or in one step (passthrough's scale). Every other method
    # replays mergekit's roundings through the engine's `compute` parameter (``computes_in_dtype``).
    rounds_once = False
    # mergekit's result is float32 whatever the config's dtype (torch promotes a step to it), so without out_dtype
    # mergekit writes float32.
    returns_float32 = False

    def __init__(self, source: RecipeSource, name: str, base: str | None, models: list[str],
                 shared: dict[str, Any], per_model: list[dict[str, Any]], positions: list[int] | None = None,
                 base_entry: tuple[int, dict[str, Any]] | None = None) -> None:
        """``positions``: each model's index under ``models:`` in the config; ``base_entry``: the index and
        parameters of base_model's own entry there, if the config lists it among the models too."""
        self.source, self.name, self.base, self.models = source, name, base, models
        self.shared, self.per_model = shared, per_model
        self.positions: list[int | None] = list(positions if positions is not None else range(len(per_model)))
        self.base_entry = base_entry
        self.compute = DTYPES.get(str(source.data.get("dtype")), "float32")
        self.warnings: list[str] = []
        known = {**self.shared_specs, **self.model_specs}
        entries = [*zip(self.positions, per_model), *([base_entry] if base_entry else [])]
        for loc, settings in [(("parameters",), shared), *((("models", i, "parameters"), s) for i, s in entries)]:
            for key in [k for k in settings if k not in known]:
                if key not in ANY_METHODS_PARAMETER:  # a typo, not another method's parameter
                    raise source.error((*loc, key), f"mergekit's {name} has no parameter '{key}' "
                                                    f"(its parameters: {', '.join(known) or 'none'})")
                self.warnings.append(f"{'.'.join(map(str, (*loc, key)))}: mergekit's {name} does not use '{key}', "
                                     "so merge-rs ignores it too")
        self.inputs = self.check_inputs()

    def written_dtype(self) -> str | None:
        """The dtype mergekit writes: out_dtype, else the method's result's (the config's dtype, if given)."""
        data = self.source.data
        if data.get("out_dtype"):
            return DTYPES.get(str(data["out_dtype"]))
        if self.returns_float32 and data.get("dtype"):
            return "float32"
        return DTYPES.get(str(data.get("dtype") or ""))

    @property
    def computes_in_dtype(self) -> bool:
        """Whether the engine's method replays mergekit's roundings in the config's dtype (declares `compute`)."""
        from ..methods import get_method

        return any(p.name == "compute" for p in get_method(self.method).parameters)

    def parameters(self, tensor: str, t: float) -> dict[str, Any]:
        """The engine parameters for ``tensor`` at layer position ``t``, with `compute` where the method has it."""
        return {**self(tensor, t), **({"compute": self.compute} if self.computes_in_dtype else {})}

    def check_inputs(self) -> tuple[str | None, list[str]]:
        """(pretrained, models) for merge-rs."""
        if self.base is None:
            raise self.source.error(("base_model",), f"mergekit's {self.name} needs base_model")
        return self.base, self.models

    def values(self, tensor: str, t: float) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        shared = {k: self._value(k, [self.shared], d, tensor, t, None) for k, d in self.shared_specs.items()}
        per_model = {k: [self._value(k, [m, self.shared], d, tensor, t, i) for i, m in enumerate(self.per_model)]
                     for k, d in self.model_specs.items()}
        return shared, per_model

    def _value(self, key: str, scopes: list[dict[str, Any]], default: Any, tensor: str, t: float,
               model: int | None) -> Any:
        for scope in scopes:
            if key in scope:
                value = evaluate(scope[key], tensor, t)
                if value is not None:
                    return value
        if default is REQUIRED:
            position = self.positions[model] if model is not None else None
            loc = (("models", position, "parameters", key) if position is not None else
                   ("base_model",) if model is not None else ("parameters", key))
            raise self.source.error(loc, f"mergekit's {self.name} needs '{key}' (no value for {tensor})")
        return default

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        raise NotImplementedError


class GeneralizedTaskArithmetic(Translator):
    method = "generalized_task_arithmetic"

    def __init__(self, source: RecipeSource, name: str, *args: Any) -> None:
        self.sparsification, self.consensus, normalize, rescale = GTA[name]
        self.shared_specs = {"normalize": normalize, "rescale": rescale, "lambda": 1.0, "int8_mask": False}
        self.model_specs = {"weight": REQUIRED, "density": 1.0}
        if self.sparsification == "magnitude_outliers":
            self.model_specs["gamma"] = 0.01
        if self.sparsification == "della_magprune":
            self.model_specs["epsilon"] = 0.15
        super().__init__(source, name, *args)

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        shared, per_model = self.values(tensor, t)
        out = {"sparsification": self.sparsification, "consensus": self.consensus, "weights": per_model["weight"],
               "density": [min(float(d), 1.0) for d in per_model["density"]], "normalize": bool(shared["normalize"]),
               "rescale": bool(shared["rescale"]), "lambda": shared["lambda"]}
        if "gamma" in per_model:
            out["gamma"] = per_model["gamma"]
        if "epsilon" in per_model:
            if len(set(per_model["epsilon"])) > 1:
                raise self.source.error(("models",), "merge-rs takes one epsilon for all models")
            out["epsilon"] = per_model["epsilon"][0]
        return out


class Linear(Translator):
    method = "weighted_average"
    shared_specs = {"normalize": True}
    model_specs = {"weight": REQUIRED}

    def check_inputs(self) -> tuple[str | None, list[str]]:
        # mergekit's linear merges base_model too, as one more input: weighted by its own entry's parameters
        # when the config lists it among the models, else by the shared ones.
        if self.base is not None:
            position, settings = self.base_entry or (None, {})
            self.per_model, self.positions = [*self.per_model, settings], [*self.positions, position]
            return None, [*self.models, self.base]
        return None, self.models

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        shared, per_model = self.values(tensor, t)
        return {"weights": per_model["weight"], "normalize": bool(shared["normalize"])}


class Slerp(Translator):
    method = "slerp"
    shared_specs = {"t": REQUIRED}
    rounds_once = True

    def check_inputs(self) -> tuple[str | None, list[str]]:
        if self.base is None or len(self.models) != 1:
            raise self.source.error(("models",), "mergekit's slerp takes base_model and exactly one other model")
        return None, [self.base, self.models[0]]

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        shared, _ = self.values(tensor, t)
        return {"t": shared["t"]}


class NearSwap(Slerp):
    method = "nearswap"
    rounds_once = False

    def check_inputs(self) -> tuple[str | None, list[str]]:
        if self.base is None or len(self.models) != 1:
            raise self.source.error(("models",), "mergekit's nearswap takes base_model and exactly one other model")
        return None, [self.base, self.models[0]]


class ArceeFusion(Translator):
    method = "arcee_fusion"
    returns_float32 = True  # the mask is float32

    def check_inputs(self) -> tuple[str | None, list[str]]:
        if self.base is None or len(self.models) != 1:
            raise self.source.error(("models",), "mergekit's arcee_fusion takes base_model and exactly one other "
                                                 "model")
        return self.base, self.models

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        return {}


class NuSlerp(Translator):
    """t = w₁ / (w₀ + w₁) of the two models' weights (0.5 when they sum to about 0); task vectors with a base."""

    method = "nuslerp"
    shared_specs = {"nuslerp_flatten": True, "nuslerp_row_wise": False}
    model_specs = {"weight": REQUIRED}

    def check_inputs(self) -> tuple[str | None, list[str]]:
        if len(self.models) != 2:
            raise self.source.error(("models",), "mergekit's nuslerp takes exactly two models besides base_model")
        return self.base, self.models

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        shared, per_model = self.values(tensor, t)
        if not shared["nuslerp_flatten"] or shared["nuslerp_row_wise"]:
            raise self.source.error(("parameters",), "merge-rs runs nuslerp flattened, mergekit's default "
                                                     "(nuslerp_flatten: true, nuslerp_row_wise: false)")
        w0, w1 = per_model["weight"]
        total = w0 + w1
        return {"t": 0.5 if abs(total) < 1e-6 else w1 / total}


class Sce(Translator):
    method = "sce"
    shared_specs = {"select_topk": 1.0, "int8_mask": False}

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        shared, _ = self.values(tensor, t)
        return {"select_topk": min(max(float(shared["select_topk"]), 0.0), 1.0)}


class Multislerp(Translator):
    method = "multislerp"
    shared_specs = {"normalize_weights": True, "eps": 1e-8}
    model_specs = {"weight": REQUIRED}

    def check_inputs(self) -> tuple[str | None, list[str]]:
        return self.base, self.models

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        shared, per_model = self.values(tensor, t)
        if shared["eps"] != 1e-8:
            raise self.source.error(("parameters", "eps"), "merge-rs's multislerp uses mergekit's default eps 1e-8")
        return {"weights": per_model["weight"], "normalize_weights": bool(shared["normalize_weights"])}


class Karcher(Translator):
    """Every model weighs alike; mergekit averages base_model's tensors too when one is given."""

    method = "karcher"
    shared_specs = {"max_iter": 10, "tol": 1e-5}

    def check_inputs(self) -> tuple[str | None, list[str]]:
        models = [self.base, *self.models] if self.base is not None else self.models
        if len(models) < 2:
            raise self.source.error(("models",), "mergekit's karcher needs two models or more")
        return None, models

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        shared, _ = self.values(tensor, t)
        return {"max_iter": int(shared["max_iter"]), "tol": float(shared["tol"])}


class Ram(Translator):
    method = "ram"
    shared_specs = {"epsilon": 1e-5}

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        shared, _ = self.values(tensor, t)
        return {"epsilon": float(shared["epsilon"])}


class RamPlus(Translator):
    method = "ramplus_tl"
    returns_float32 = True  # λτ is float32: λ is a float32 tensor
    shared_specs = {"r": 0.1, "alpha": 0.2, "epsilon": 1e-5}

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        shared, _ = self.values(tensor, t)
        return {name: float(shared[name]) for name in ("r", "alpha", "epsilon")}


class ModelStock(Translator):
    method = "model_stock"
    shared_specs = {"filter_wise": False}

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        shared, _ = self.values(tensor, t)
        return {"filter_wise": bool(shared["filter_wise"])}


class Passthrough(Translator):
    method = "passthrough"
    model_specs = {"scale": 1.0}
    rounds_once = True

    def check_inputs(self) -> tuple[str | None, list[str]]:
        if self.base is not None or len(self.models) != 1:
            raise self.source.error(("models",), "mergekit's passthrough takes exactly one model and no base_model "
                                                 "(or slices)")
        return None, self.models

    def __call__(self, tensor: str, t: float) -> dict[str, Any]:
        _, per_model = self.values(tensor, t)
        return {"scale": float(per_model["scale"][0])}


# Every parameter some mergekit method reads: one of these on a method that does not read it is ignored, as mergekit
# ignores it (its own tests give slerp and model_stock a weight); any other name is a mistake.
ANY_METHODS_PARAMETER = {"weight", "density", "gamma", "epsilon", "lambda", "normalize", "rescale", "int8_mask", "t",
                         "normalize_weights", "eps", "filter_wise", "scale", "nuslerp_flatten", "nuslerp_row_wise",
                         "select_topk", "max_iter", "tol", "r", "alpha"}


TRANSLATORS: dict[str, type[Translator]] = {
    "linear": Linear, "slerp": Slerp, "multislerp": Multislerp, "model_stock": ModelStock, "passthrough": Passthrough,
    "nearswap": NearSwap, "nuslerp": NuSlerp, "sce": Sce, "karcher": Karcher, "ram": Ram, "ramplus_tl": RamPlus,
    "arcee_fusion": ArceeFusion, **{name: GeneralizedTaskArithmetic for name in GTA}}


def translator(source: RecipeSource, name: str, base: str | None, models: list[str], shared: dict[str, Any],
               per_model: list[dict[str, Any]], positions: list[int],
               base_entry: tuple[int, dict[str, Any]] | None) -> Translator:
    return TRANSLATORS[name](source, name, base, models, shared, per_model, positions, base_entry)
