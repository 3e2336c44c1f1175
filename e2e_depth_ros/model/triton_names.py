"""The Triton model's stable names: what ``e2e-depth serve`` binds and the triton backend
asks for (docs/serving.md). Plain constants, so the server and the client read one table and
neither imports the other's libraries.

One model, ``e2e_depth``, version 1, batched on the first axis (N <= the server's --max-batch):

    input  image                  uint8   [N, H, W, 3]  RGB
    input  processing_resolution  int32   [N, 1]        optional; longer side the model runs
                                                        at, 0 = native (default: the server's)
    output depth                  float32 [N, H, W]     affine-invariant, [0, 1], small = near
    output normals                float32 [N, H, W, 3]  unit, ROS optical frame

A request names the outputs it wants; the server computes only those. A server started
without one of the models has no such output.
"""

MODEL = "e2e_depth"
MODEL_VERSION = "1"
IMAGE = "image"
RESOLUTION = "processing_resolution"
OUTPUTS = ("depth", "normals")  # the task names are the output names
