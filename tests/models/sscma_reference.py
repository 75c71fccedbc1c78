"""An SSCMA-layout RTMDet in PyTorch, for the torch-equivalence tests of SSCMA checkpoints (import needs torch).

Written from SSCMA's (Seeed-Studio/ModelAssistant) modules, keeping their attribute names and registration
order so that ``state_dict()`` has SSCMA's keys in SSCMA's order: ``sscma/models/backbones/cspnext.py``
(CSPNeXt), ``sscma/models/layers/csp_layer.py`` (CSPLayer, CSPNeXtBlock), ``sscma/models/layers/se_layer.py``
(ChannelAttention), ``sscma/models/backbones/csp_darknet.py`` (SPPBottleneck), ``sscma/models/cnn``
(ConvModule: conv, bn, activate; DepthwiseSeparableConvModule), ``sscma/models/necks/cspnext_pafpn.py``
(BaseYOLONeck.forward, CSPNeXtPAFPN's build_* methods) and ``sscma/models/heads/rtmdet_head.py``
(RTMDetHead.head_module = RTMDetSepBNHeadModule, whose forward flattens each level with batch 1).
Only the inference path; no init, no losses.
"""

from __future__ import annotations

import torch
import torch.nn as nn

ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU}


class ConvModule(nn.Module):
    def __init__(self, cin, cout, k, stride=1, groups=1, act="relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)  # build_norm_layer: eps 1e-5 (setdefault) for norm_cfg=dict(type=BatchNorm2d)
        self.activate = ACTS[act]()

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    def __init__(self, cin, cout, k, act="relu"):
        super().__init__()
        self.depthwise_conv = ConvModule(cin, cin, k, groups=cin, act=act)
        self.pointwise_conv = ConvModule(cin, cout, 1, act=act)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


class CSPNeXtBlock(nn.Module):
    def __init__(self, cin, cout, add_identity, act):
        super().__init__()
        self.conv1 = ConvModule(cin, cout, 3, act=act)  # expansion 1.0 inside CSPLayer
        self.conv2 = DepthwiseSeparableConvModule(cout, cout, 5, act=act)
        self.add_identity = add_identity and cin == cout

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class ChannelAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(c, c, 1, 1, 0, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.act(self.fc(self.global_avgpool(x)))


class CSPLayer(nn.Module):
    def __init__(self, cin, cout, num_blocks, add_identity, attention, act):
        super().__init__()
        mid = int(cout * 0.5)
        self.channel_attention = attention
        self.main_conv = ConvModule(cin, mid, 1, act=act)
        self.short_conv = ConvModule(cin, mid, 1, act=act)
        self.final_conv = ConvModule(2 * mid, cout, 1, act=act)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, mid, add_identity, act) for _ in range(num_blocks)])
        if attention:
            self.attention = ChannelAttention(2 * mid)

    def forward(self, x):
        x_short = self.short_conv(x)
        x_main = self.blocks(self.main_conv(x))
        y = torch.cat((x_main, x_short), dim=1)
        if self.channel_attention:
            y = self.attention(y)
        return self.final_conv(y)


class SPPBottleneck(nn.Module):
    def __init__(self, cin, cout, act, kernel_sizes=(5, 9, 13)):
        super().__init__()
        mid = cin // 2
        self.conv1 = ConvModule(cin, mid, 1, act=act)
        self.poolings = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in kernel_sizes])
        self.conv2 = ConvModule(mid * (len(kernel_sizes) + 1), cout, 1, act=act)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [p(x) for p in self.poolings], dim=1))


class CSPNeXt(nn.Module):
    ARCH = [(64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
            (512, 1024, 3, False, True)]

    def __init__(self, deepen, widen, attention, act):
        super().__init__()
        half, full = int(64 * widen // 2), int(64 * widen)
        self.stem = nn.Sequential(ConvModule(3, half, 3, 2, act=act), ConvModule(half, half, 3, act=act),
                                  ConvModule(half, full, 3, act=act))
        self.layers = ["stem"]
        for i, (cin, cout, n, add_identity, spp) in enumerate(self.ARCH):
            cin, cout, n = int(cin * widen), int(cout * widen), max(round(n * deepen), 1)
            stage = [ConvModule(cin, cout, 3, 2, act=act)]
            if spp:
                stage.append(SPPBottleneck(cout, cout, act))
            stage.append(CSPLayer(cout, cout, n, add_identity, attention, act))
            self.add_module(f"stage{i + 1}", nn.Sequential(*stage))
            self.layers.append(f"stage{i + 1}")

    def forward(self, x):
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in (2, 3, 4):
                outs.append(x)
        return outs


class CSPNeXtPAFPN(nn.Module):
    def __init__(self, deepen, widen, num_csp_blocks, act, in_channels=(256, 512, 1024), out_channels=256):
        super().__init__()
        ch = [int(c * widen) for c in in_channels]
        out = int(out_channels * widen)
        n = round(num_csp_blocks * deepen)
        self.in_channels = ch
        self.reduce_layers = nn.ModuleList([nn.Identity(), nn.Identity(), ConvModule(ch[2], ch[1], 1, act=act)])
        self.upsample_layers = nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest") for _ in range(2)])
        self.top_down_layers = nn.ModuleList([
            nn.Sequential(CSPLayer(ch[1] * 2, ch[1], n, False, False, act), ConvModule(ch[1], ch[0], 1, act=act)),
            CSPLayer(ch[0] * 2, ch[0], n, False, False, act)])
        self.downsample_layers = nn.ModuleList([ConvModule(ch[i], ch[i], 3, 2, act=act) for i in range(2)])
        self.bottom_up_layers = nn.ModuleList([CSPLayer(ch[i] * 2, ch[i + 1], n, False, False, act) for i in range(2)])
        self.out_layers = nn.ModuleList([ConvModule(ch[i], out, 3, act=act) for i in range(3)])

    def forward(self, inputs):  # BaseYOLONeck.forward, upsample_feats_cat_first=True
        n = len(self.in_channels)
        reduce_outs = [self.reduce_layers[i](inputs[i]) for i in range(n)]
        inner_outs = [reduce_outs[-1]]
        for idx in range(n - 1, 0, -1):
            up = self.upsample_layers[n - 1 - idx](inner_outs[0])
            inner_outs.insert(0, self.top_down_layers[n - 1 - idx](torch.cat([up, reduce_outs[idx - 1]], 1)))
        outs = [inner_outs[0]]
        for idx in range(n - 1):
            down = self.downsample_layers[idx](outs[-1])
            outs.append(self.bottom_up_layers[idx](torch.cat([down, inner_outs[idx + 1]], 1)))
        return [self.out_layers[i](outs[i]) for i in range(n)]


class RTMDetSepBNHeadModule(nn.Module):
    def __init__(self, num_classes, widen, share_conv, act, in_channels=256, feat_channels=256, stacked_convs=2,
                 levels=3):
        super().__init__()
        self.num_classes = num_classes
        feat, cin = int(feat_channels * widen), int(in_channels * widen)
        self.cls_convs, self.reg_convs = nn.ModuleList(), nn.ModuleList()
        self.rtm_cls, self.rtm_reg = nn.ModuleList(), nn.ModuleList()
        for _ in range(levels):
            self.cls_convs.append(nn.ModuleList([ConvModule(cin if i == 0 else feat, feat, 3, act=act)
                                                 for i in range(stacked_convs)]))
            self.reg_convs.append(nn.ModuleList([ConvModule(cin if i == 0 else feat, feat, 3, act=act)
                                                 for i in range(stacked_convs)]))
            self.rtm_cls.append(nn.Conv2d(feat, num_classes, 1))
            self.rtm_reg.append(nn.Conv2d(feat, 4, 1))
        if share_conv:
            for n in range(levels):
                for i in range(stacked_convs):
                    self.cls_convs[n][i].conv = self.cls_convs[0][i].conv
                    self.reg_convs[n][i].conv = self.reg_convs[0][i].conv

    def forward(self, feats):
        cls_scores, bbox_preds = [], []
        for idx, x in enumerate(feats):
            c, r = x, x
            for layer in self.cls_convs[idx]:
                c = layer(c)
            for layer in self.reg_convs[idx]:
                r = layer(r)
            cls_scores.append(self.rtm_cls[idx](c).permute(0, 2, 3, 1).reshape(1, -1, self.num_classes))
            bbox_preds.append(self.rtm_reg[idx](r).permute(0, 2, 3, 1).reshape(1, -1, 4))
        return tuple(cls_scores), tuple(bbox_preds)


class RTMDetHead(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.head_module = RTMDetSepBNHeadModule(**kwargs)

    def forward(self, feats):
        return self.head_module(feats)


class RTMDet(nn.Module):
    """``RTMDet(backbone, neck, bbox_head)``; input already normalised by SSCMA's data preprocessor."""

    def __init__(self, deepen, widen, attention, neck_blocks, share_conv, num_classes, act="relu"):
        super().__init__()
        self.backbone = CSPNeXt(deepen, widen, attention, act)
        self.neck = CSPNeXtPAFPN(deepen, widen, neck_blocks, act)
        self.bbox_head = RTMDetHead(num_classes=num_classes, widen=widen, share_conv=share_conv, act=act)

    def forward(self, x):
        return self.bbox_head(self.neck(self.backbone(x)))


# SSCMA's configs as (deepen, widen, channel_attention, neck num_csp_blocks before scaling, share_conv).
SSCMA_NETS = {
    "rtmdet_nano_8xb32_300e_coco": (0.33, 0.25, False, 1, False),
    "rtmdet_nano_8xb32_300e_coco_relu": (0.33, 0.25, True, 3, False),
    "rtmdet_s_8xb32_300e_coco": (0.33, 0.5, False, 1, True),
}
