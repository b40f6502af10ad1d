import torch

from fcl_ray.methods.finetune import init_unet
from fcl_ray.methods.models import EmbeddingNet, build_unet, load_encoder_into_unet

FEATURES = [8, 8, 16, 16, 16, 8]


def test_pretrained_encoder_loads_into_unet_and_decoder_stays_seeded():
    net = EmbeddingNet(FEATURES, 32, 16)
    z = net(torch.randn(3, 1, 32, 32))
    assert z.shape == (3, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    state = net.encoder.state_dict()
    pretrained = init_unet(FEATURES, state, seed=5, device=torch.device("cpu"))
    random = init_unet(FEATURES, None, seed=5, device=torch.device("cpu"))
    for key, value in state.items():
        assert torch.equal(pretrained.state_dict()[key], value)
    # Same seed -> same decoder init: the two runs differ by the encoder only.
    assert torch.equal(pretrained.final_conv.weight, random.final_conv.weight)
    assert not torch.equal(pretrained.conv_0.conv_0.conv.weight, random.conv_0.conv_0.conv.weight)
    assert pretrained(torch.randn(2, 1, 32, 32)).shape == (2, 4, 32, 32)


def test_mismatched_encoder_is_rejected():
    unet = build_unet(FEATURES)
    try:
        load_encoder_into_unet(unet, {"head.mlp.0.weight": torch.zeros(1)})
    except ValueError as err:
        assert "unexpected" in str(err)
    else:
        raise AssertionError("a foreign state dict must not load silently")
