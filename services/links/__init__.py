"""The links service.

Every join link: token hashes, kinds, windows and states; decides who may join now."""
