from .folder import ImageFolderDataset
from .openmoji import OpenMojiDataset, class_id, class_names, subgroup_to_group

__all__ = ["OpenMojiDataset", "ImageFolderDataset", "class_id", "class_names", "subgroup_to_group"]
