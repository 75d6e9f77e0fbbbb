"""avatarforge.animate"""
