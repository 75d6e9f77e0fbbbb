"""avatarforge.generate"""
