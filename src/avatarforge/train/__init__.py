"""avatarforge.train"""
