"""Model stage: the chapter's ResNet-18, built from `Residual` HybridBlocks. Blocks and constructors only."""
import mxnet as mx
from mxnet import init
from mxnet.gluon import nn

from gluon_cifar.images import INPUT_SHAPE


class Residual(nn.HybridBlock):
    """Two 3x3 convolutions with BatchNorm and a shortcut (1x1 convolution when the shape changes)."""

    def __init__(self, num_channels, use_1x1conv=False, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = nn.Conv2D(num_channels, kernel_size=3, padding=1, strides=strides)
        self.conv2 = nn.Conv2D(num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.Conv2D(num_channels, kernel_size=1, strides=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.BatchNorm()
        self.bn2 = nn.BatchNorm()

    def hybrid_forward(self, F, X):
        Y = F.npx.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        return F.npx.relu(Y + X)


def resnet_block(num_channels, num_residuals, first_block=False):
    """A stage of `num_residuals` Residual blocks; all but the first stage halve the resolution."""
    blk = nn.HybridSequential()
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blk.add(Residual(num_channels, use_1x1conv=True, strides=2))
        else:
            blk.add(Residual(num_channels))
    return blk


def resnet18(num_classes):
    """The chapter's ResNet-18 for 32x32 inputs: 3x3 stem, no max-pooling."""
    net = nn.HybridSequential()
    net.add(nn.Conv2D(64, kernel_size=3, strides=1, padding=1),
            nn.BatchNorm(), nn.Activation("relu"))
    net.add(resnet_block(64, 2, first_block=True),
            resnet_block(128, 2),
            resnet_block(256, 2),
            resnet_block(512, 2))
    net.add(nn.GlobalAvgPool2D(), nn.Dense(num_classes))
    return net


def initialize_shapes(net):
    """Run one blank image through `net` on its first device: completes deferred initialisation (every
    parameter's shape known) and, for a hybridized net, traces the graph that `export` writes."""
    device = next(iter(net.collect_params().values())).list_ctx()[0]
    net(mx.np.zeros((1,) + INPUT_SHAPE, ctx=device))


def get_net(devices, num_classes=10):
    """A ResNet-18 with Xavier-initialised parameters on every device in `devices`."""
    net = resnet18(num_classes)
    net.initialize(ctx=devices, init=init.Xavier())
    return net
