"""Exception types of the package, so callers can catch one family per failure kind."""


class E2EDepthError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(E2EDepthError):
    """A model folder or hub id that cannot be loaded as an E2E-FT checkpoint."""


class InputImageError(E2EDepthError, ValueError):
    """An image array the estimator cannot process (dtype, shape, size)."""


class MessageError(E2EDepthError, ValueError):
    """A ROS message whose contents are inconsistent or in an unsupported encoding."""


class CameraError(E2EDepthError, ValueError):
    """Camera intrinsics that cannot describe a pinhole camera (K = 0, size mismatch)."""


class ScaleFitError(E2EDepthError, ValueError):
    """Arguments to the LiDAR scale fit that are malformed (not a failed fit: see ScaleFit.ok)."""


class BagError(E2EDepthError):
    """A rosbag that is missing, corrupt, or lacks the topics an evaluation needs."""


class ModelServerError(E2EDepthError):
    """A remote model server (Triton) that is unreachable, too slow, or refuses a request."""
