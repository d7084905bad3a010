"""cavmae"""
