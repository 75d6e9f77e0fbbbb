"""avatarforge.serve"""
