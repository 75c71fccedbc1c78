"""``python -m rtmdet_keras.models --config tiny --cfg-options num_classes=80 imgsz='(640,640)'``."""

from rtmdet_keras.commands.models import main

if __name__ == "__main__":
    main()
