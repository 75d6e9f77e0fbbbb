"""avatarforge.postprocess"""
