print("certrot")
