from .folder import ImageFolderDataset
from .openmoji import OpenMojiDataset, class_id, class_names

__all__ = ["OpenMojiDataset", "ImageFolderDataset", "class_id", "class_names"]
