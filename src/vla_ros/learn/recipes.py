"""Training recipes: which weights a `vla-ros train` run updates, and how.

Each recipe is one registered class: `TrainConfig` takes its `--recipe` choices and help from
the registry and asks the recipe to check the options it reads, and the trainer asks it which
trunk (if any) to train and what to do before the weights are saved. Torch-free at import, so
building the `vla-ros` parser stays cheap; a recipe imports what it trains with when it runs.

- `head`: trunk and action token frozen; the trainer computes the ACT feature of every dataset
  frame once and the LSTM + MLPs train on them.
- `lora`: PEFT LoRA adapters on the Gemma decoder (and SigLIP with `lora_vision`) + action
  token + head; the adapters are merged into the saved weights, so the output loads unchanged.
- `full`: everything trains.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol


class RecipeOptions(Protocol):
    """The options of a run that recipes read (a `TrainConfig` has them all)."""

    recipe: str
    lora_rank: int
    lora_vision: bool
    gradient_checkpointing: bool


class Recipe:
    """What one recipe trains; a subclass registers itself with `@register`."""

    name: ClassVar[str]
    help: ClassVar[str]
    trains_trunk: ClassVar[bool] = True
    """False: the trunk stays frozen, and the trainer feeds the head cached ACT features."""
    adapts_vision: ClassVar[bool] = False
    """True: `lora_vision` (adapters on SigLIP too) means something to this recipe."""

    def __init__(self, options: RecipeOptions) -> None:
        self.options = options

    @classmethod
    def check(cls, options: RecipeOptions) -> None:
        """Raise ValueError naming an option this recipe cannot honour (it would be ignored)."""
        if options.gradient_checkpointing and not cls.trains_trunk:
            raise ValueError(
                f"gradient_checkpointing recomputes trunk activations, but the {cls.name} recipe "
                f"does not train the trunk (use one of {trunk_recipes()})"
            )
        if options.lora_vision and not cls.adapts_vision:
            raise ValueError(f"lora_vision needs the lora recipe, not {cls.name}")

    def prepare(self, backbone: Any) -> Any:
        """Make `backbone` trainable as the recipe says; the trunk module to train, or None."""
        if self.options.gradient_checkpointing:
            # Keep only each decoder layer's input; recompute the rest in backward.
            backbone.vlm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        return backbone

    def before_save(self, backbone: Any) -> None:
        """Bring the trained weights into the layout `VLAPolicy` loads."""


RECIPES: dict[str, type[Recipe]] = {}


def register(recipe: type[Recipe]) -> type[Recipe]:
    """Add a recipe to `--recipe`; a second one of the same name is refused."""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    RECIPES[recipe.name] = recipe
    return recipe


def trunk_recipes() -> list[str]:
    return [name for name, recipe in RECIPES.items() if recipe.trains_trunk]


def recipe_for(options: RecipeOptions) -> Recipe:
    if options.recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {list(RECIPES)}, got {options.recipe!r}")
    return RECIPES[options.recipe](options)


@register
class HeadRecipe(Recipe):
    name = "head"
    help = "frozen trunk, train the action head"
    trains_trunk = False

    def prepare(self, backbone: Any) -> None:
        for param in backbone.parameters():
            param.requires_grad_(False)


@register
class LoraRecipe(Recipe):
    name = "lora"
    help = "+ LoRA adapters on the decoder"
    adapts_vision = True

    def prepare(self, backbone: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        super().prepare(backbone)
        targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
        if self.options.lora_vision:
            targets = f"({targets})|(.*vision_tower.*\\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2))"
        lora = LoraConfig(
            r=self.options.lora_rank,
            lora_alpha=2 * self.options.lora_rank,
            lora_dropout=0.0,
            target_modules=targets,
        )
        # Adapters are injected into backbone.vlm in place; the PeftModel is kept only to merge.
        self._peft = get_peft_model(backbone.vlm, lora)
        backbone.action_token.requires_grad_(True)
        return backbone

    def before_save(self, backbone: Any) -> None:
        self._peft.merge_and_unload()


@register
class FullRecipe(Recipe):
    name = "full"
    help = "every weight"
