"""lmms-eval's registration payload for the plugin (entry point ``lmms_eval.models``): a manifest naming the
class lazily, so lmms-eval's registry imports the plugin (and torch) only when the model is asked for."""
from lmms_eval.models.registry_v2 import ModelManifest

MANIFEST = ModelManifest(model_id="spatialboost_vlm", simple_class_path="suites.vqa.plugin.SpatialBoostLMM",
                         aliases=("spatialboost",))
