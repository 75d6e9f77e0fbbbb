"""avatarforge.eval"""
