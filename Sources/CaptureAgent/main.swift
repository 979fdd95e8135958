print("capture-agent")
