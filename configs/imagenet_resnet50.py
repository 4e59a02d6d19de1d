"""ResNet-50 on ImageNet: SGD + Nesterov, 5-epoch warmup then cosine, label smoothing, bf16.

  python scripts/train.py --config configs/imagenet_resnet50.py --workdir runs/imagenet_r50
  # an ImageNet-layout folder (train/<class>/*.JPEG, val/<class>/*.JPEG) instead of TFDS:
  python scripts/train.py --config configs/imagenet_resnet50.py --workdir runs/imagenet_r50 \
      --config.data.name=folder:/data/imagenet

The data are streamed (data.on_device=no): JPEGs decoded and augmented on the host, in data
loader workers (jaxcnn/data/transforms.py), never the whole set in memory. Train: random-resized
crop 224 (8-100% of the area, aspect 3/4-4/3) + flip; eval: the central 224x224 of the image
resized to 256 on its shorter side (data.center_crop = 224 / 256 = 0.875).

Sources: Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour"
(batch 256 at lr 0.1, scaled linearly with the batch; 5-epoch linear warmup; Nesterov momentum
0.9; weight decay 1e-4; 90 epochs) and torchvision's reference classification recipe
(references/classification: cosine schedule, label smoothing 0.1, the crop sizes above).
What this recipe changes from Goyal et al.: a cosine decay to 0 after the warmup instead of
steps of x0.1 at epochs 30, 60 and 80; label smoothing 0.1 (they use none); bf16 compute
(parameters, optimizer state, BatchNorm statistics and the loss stay float32); BatchNorm
scales all start at 1 (torchvision's resnet50, a stride-2 3x3 conv:
"ResNet v1.5"), where Goyal et al. start each block's last at 0; the warmup starts at 0, theirs
at lr / k for k-times the base batch. As in Goyal et al. (and unlike torchvision's default),
weight decay skips BatchNorm's scales and offsets and the classifier's bias
(optim.decay_norm_and_bias = False).

Not measured yet: no ImageNet run has been made with this config (a 2-core CPU machine cannot
train it; tests/test_imagenet_recipe.py runs it end to end at a 64-pixel crop on a generated
ImageNet-layout folder).
"""

from jaxcnn.config import default_config

BATCH = 256  # global batch; the learning rate follows it (Goyal et al.'s linear scaling rule)


def get_config():
    c = default_config()
    c.model.name = "resnet50"
    c.precision = "bf16"

    c.data.name = "tfds:imagenet2012"  # or folder:<dir with train/ and val/>
    c.data.on_device = "no"  # stream: 1.28 M JPEGs do not fit in device memory as uint8
    c.data.image_size = 224  # the crop the network sees, train and eval
    c.data.mean = (0.485, 0.456, 0.406)  # ImageNet train-set statistics, on the 0..1 scale
    c.data.std = (0.229, 0.224, 0.225)
    c.data.random_resized_crop = (0.08, 1.0)  # fraction of the area; aspect 3/4..4/3 (default)
    c.data.flip = True
    c.data.center_crop = 0.875  # eval: shorter side to 224 / 0.875 = 256, central 224x224

    c.optim.name = "sgd"
    c.optim.momentum = 0.9
    c.optim.nesterov = True
    c.optim.learning_rate = 0.1 * BATCH / 256  # 0.1 per 256 images, linear in the batch
    c.optim.schedule = "cosine"  # to 0 at the end, after the warmup
    c.optim.warmup_epochs = 5.0  # linear from 0
    c.optim.weight_decay = 1e-4  # L2 on conv and dense kernels ...
    c.optim.decay_norm_and_bias = False  # ... not on BatchNorm or biases (Goyal et al. 5.1)

    c.train.epochs = 90
    c.train.batch_size = BATCH
    c.train.eval_batch_size = 500  # 50,000 validation images: 100 batches
    c.train.label_smoothing = 0.1
    c.train.drop_remainder = True  # BatchNorm: a padded last batch would skew its statistics
    c.train.log_every_steps = 100
    return c
